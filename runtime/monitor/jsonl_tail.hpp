#pragma once
// Follows an append-only JSON-lines file (a run's metrics.jsonl; the console of issue 11 reads
// runs this way, whatever process wrote them and whether it is alive): each poll() returns the
// complete lines added since the last one, parsed.
//   - A line that is not a JSON object (garbage, a line cut short by a killed writer and then
//     continued by a resumed one) is skipped and counted, never thrown.
//   - A last line without its newline is kept pending until a later poll completes it (the
//     writer may be mid-line); finish() counts it as skipped (the writer is gone).
//   - A file that became shorter than what was read (rewritten: a resumed RL run keeps only its
//     first lines) is read again from its start, and that poll says reset.
//   - A missing file is no lines yet, not an error.
//   - A line longer than max_line bytes is skipped (counted once) without being held in memory.
// Reads at most max_read bytes per poll, so a huge backlog arrives over several polls.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace zf::monitor {

struct tail_batch {
  std::vector<nlohmann::json> rows;  // new objects, in file order
  std::size_t skipped = 0;           // new lines that were not JSON objects
  bool reset = false;                // the file was rewritten: rows start from its first line
  bool more = false;                 // the file holds more than this poll read (max_read)
};

class jsonl_tail {
 public:
  explicit jsonl_tail(std::filesystem::path file, std::size_t max_read = std::size_t(8) << 20,
                      std::size_t max_line = std::size_t(1) << 20);
  tail_batch poll();
  // The pending partial line, if any, is dropped and counted; returns how many that was (0, 1).
  std::size_t finish();
  uint64_t offset() const { return offset_; }  // bytes consumed (complete lines)
  std::size_t skipped_total() const { return skipped_; }
  std::size_t rows_total() const { return rows_; }

 private:
  void take_line(std::string_view line, tail_batch& out);
  std::filesystem::path file_;
  std::size_t max_read_, max_line_;
  bool discarding_ = false;  // inside a line longer than max_line_: dropped up to its newline
  uint64_t discarded_ = 0;   // bytes of it read so far
  uint64_t offset_ = 0;      // of the first byte not yet read
  std::string pending_;      // bytes read after the last newline
  std::size_t skipped_ = 0, rows_ = 0;
  std::vector<char> buf_;  // reused read buffer
};

}  // namespace zf::monitor
