#pragma once
// Durable file-system steps shared by every writer: whole-file writes that are atomic (temp
// file, fsync, rename, fsync of the folder) and checksums.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace zf::storage {

void write_file_atomic(const std::filesystem::path& p, const void* data, std::size_t n);
void write_file_atomic(const std::filesystem::path& p, const std::string& text);
void fsync_path(const std::filesystem::path& p);  // a file or a folder
// A file written atomically in pieces (the safetensors and GGUF writers): body(put) calls
// put(data, n) for each piece, into a new `p.tmp` (0644); then fsync, close, rename over p and
// an fsync of its folder (a failure of that last one is not an error: the file is complete).
// Any failure removes p.tmp, leaves p as it was and throws zf::error "<what> '<file>': ...".
using piece_writer = std::function<void(const void* data, std::size_t n)>;
void write_pieces_atomic(const std::filesystem::path& p, std::string_view what,
                         const std::function<void(const piece_writer& put)>& body);
// Opens p for reading (O_RDONLY | O_CLOEXEC) and returns the descriptor; zf::error naming the
// file when it cannot be opened or is not a regular file: a FIFO, a socket or a device in
// place of a checkpoint or model file would block a reader forever. Opened non-blocking, checked
// with fstat, then switched to blocking reads (no window for a swap between check and open).
int open_regular(const std::filesystem::path& p);

// A whole regular file mapped read-only (MAP_SHARED), unmapped when dropped; movable. The
// readers of mmap'ed formats (token shards, metric indexes) share it. zf::error
// "<what> <file> is truncated: N bytes, smaller than its <min_len>-byte header" for a shorter
// file, "cannot mmap <what> <file>: ..." when mapping fails; open_regular's refusals otherwise.
class mapped_file {
 public:
  mapped_file() = default;
  static mapped_file open(const std::filesystem::path& p, std::string_view what,
                          std::size_t min_len);
  mapped_file(mapped_file&& o) noexcept { *this = std::move(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    std::swap(addr_, o.addr_);
    std::swap(len_, o.len_);
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  ~mapped_file();
  const char* data() const { return static_cast<const char*>(addr_); }
  std::size_t size() const { return len_; }

 private:
  void* addr_ = nullptr;
  std::size_t len_ = 0;
};
// For a descriptor opened with O_NONBLOCK: zf::error naming p unless it is a regular file, else
// switches it to blocking reads. The caller keeps (and closes) fd either way.
void require_regular(int fd, const std::filesystem::path& p);
// "a, b, c, ..." : the names of the first `most` items (then ", ..."), for a tensor file
// reader's "no tensor named X (the file has N tensors: ...)".
template <class Items>
std::string first_names(const Items& items, std::size_t most = 8) {
  std::string some;
  std::size_t shown = 0;
  for (const auto& t : items) {
    if (shown == most) return some + ", ...";
    some += (shown++ ? ", " : "") + t.name;
  }
  return some;
}
std::string read_text_file(const std::filesystem::path& p);  // zf::error naming the file
uint32_t crc32_of(const void* data, std::size_t n, uint32_t seed = 0);
uint32_t crc32_file(const std::filesystem::path& p, std::size_t* size = nullptr);

}  // namespace zf::storage
