#pragma once
// A file writer on io_uring for the checkpoint data files: the caller fills 4 KiB-aligned bounce
// buffers from a small pool and queues them; up to `depth` writes are in flight while the caller
// fills the next buffer (copy + checksum overlap the disk). The file is opened with O_DIRECT
// when the file system allows it; writes whose offset or length is not a multiple of 4 KiB (the
// tail of a file) go through a second, buffered descriptor. finish() waits for every write and
// fsyncs the file (IORING_OP_FSYNC). Every failure throws zf::error naming the file.
// One writer per thread; separate writers (one per rank) run concurrently without sharing state.
// liburing stays out of this header (pimpl), so callers outside storage/ never see it.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace zf::storage {

struct uring_options {
  std::size_t chunk_bytes = 8u << 20;  // bounce buffer size, rounded up to 4 KiB
  unsigned depth = 4;                  // buffers (= writes in flight at most)
  bool direct = true;                  // try O_DIRECT
};

class uring_writer {
 public:
  static constexpr std::size_t k_align = 4096;

  // Creates (or truncates) p. Falls back to buffered I/O when O_DIRECT is refused.
  uring_writer(const std::filesystem::path& p, const uring_options& o = {});
  // Waits for writes still in flight and closes; the file is left as it is (not fsynced).
  ~uring_writer();
  uring_writer(const uring_writer&) = delete;
  uring_writer& operator=(const uring_writer&) = delete;

  std::size_t chunk_bytes() const;
  bool direct() const;  // O_DIRECT in use (false after a fallback)

  // A free bounce buffer of chunk_bytes() (4 KiB aligned); waits for a write to complete when
  // all are in flight.
  std::byte* acquire();
  // Queues a write of buf[0, n) at file offset off; buf comes from acquire() and returns to the
  // pool when the write completes. n <= chunk_bytes(). The 4 KiB-aligned part goes through
  // O_DIRECT, an unaligned remainder through the buffered descriptor.
  void submit(std::byte* buf, std::size_t n, uint64_t off);
  // Waits for every write, fsyncs, closes. Returns the bytes written.
  uint64_t finish();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace zf::storage
