#pragma once
// TensorBoard event files (`monitor.tensorboard = true`): a run's scalars, as metrics.jsonl has
// them, in DIR/events.out.tfevents.<unix seconds>.<hostname>, which `tensorboard --logdir` reads
// live. The file is a TFRecord stream, each record
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked
//   CRC32C of the data,         mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
// and each record's data one serialized tensorflow.Event, encoded here by hand (a handful of
// fields, no protobuf library):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first event holds file_version "brain.Event:2", then one event per scalar. Records are
// buffered (one buffer, reused) and written whole on flush(), when the buffer fills and at
// destruction, so a killed run loses at most its unflushed scalars and a reader sees only whole
// records (or a cut last one, which TensorBoard skips). Monitoring never throws into a training
// loop: a file that cannot be created or a failed write is counted (failures(), one per flush
// that could not write), not thrown, and after a failed write the file is left as it is.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace zf::monitor {

// CRC32C (Castagnoli) of bytes, and TFRecord's masked form of it.
uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

class tensorboard_writer {
 public:
  // Creates dir (if needed) and dir/events.out.tfevents.<unix seconds>.<hostname> (appended to
  // should it exist), and writes the file_version event at once. flush_bytes: buffered before a
  // write.
  explicit tensorboard_writer(const std::filesystem::path& dir, std::size_t flush_bytes = 64 << 10);
  ~tensorboard_writer();
  tensorboard_writer(const tensorboard_writer&) = delete;
  tensorboard_writer& operator=(const tensorboard_writer&) = delete;

  // One scalar event; value is stored as a float (simple_value), wall_time in unix seconds.
  void add_scalar(std::string_view tag, int64_t step, double value, double wall_time_unix);
  void flush();
  const std::filesystem::path& file() const { return path_; }
  std::size_t failures() const { return failures_; }

 private:
  void append_record();  // frames event_ as one TFRecord at the end of pending_
  std::filesystem::path path_;
  std::FILE* f_ = nullptr;
  std::string event_;    // the event being encoded (capacity kept)
  std::string pending_;  // framed records not yet written (capacity kept)
  std::size_t flush_bytes_, failures_ = 0;
};

}  // namespace zf::monitor
