#include "storage/token_shard.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"

namespace zf::storage {
namespace {
constexpr char k_magic[8] = {'Z', 'F', 'T', 'O', 'K', 'S', 'H', 'D'};
struct header {
  char magic[8];
  uint32_t version, dtype;
  uint64_t count;
  uint32_t vocab, reserved;
};
static_assert(sizeof(header) == 32);
}  // namespace

token_shard token_shard::open(const std::filesystem::path& p) {
  token_shard s;
  s.map_ = mapped_file::open(p, "token shard", sizeof(header));
  s.path_ = p;
  const char* m = s.map_.data();
  const std::size_t len = s.map_.size();
  header h;
  std::memcpy(&h, m, sizeof h);
  if (std::memcmp(h.magic, k_magic, 8) != 0)
    fail("{} is not a token shard (bad magic)", p.string());
  if (h.version != 1) fail("token shard {}: unsupported version {}", p.string(), h.version);
  if (h.dtype != 1 && h.dtype != 2) fail("token shard {}: unknown dtype {}", p.string(), h.dtype);
  std::size_t elem = h.dtype == 1 ? 2 : 4;
  // compared by division: a forged count must not overflow the check
  if ((len - sizeof(header)) % elem != 0 || (len - sizeof(header)) / elem != h.count)
    fail("token shard {} is truncated or padded: header says {} tokens ({} bytes), file has {}",
         p.string(), h.count, sizeof(header) + h.count * elem, len);
  s.ids_ = static_cast<const char*>(m) + sizeof(header);
  s.count_ = h.count;
  s.dtype_ = h.dtype;
  s.vocab_ = h.vocab;
  ::madvise(const_cast<char*>(m), len, MADV_WILLNEED);
  return s;
}

void token_shard::read(std::size_t begin, std::size_t n, int* out) const {
  if (begin + n > count_)
    fail("token shard {}: read [{}, {}) past its {} tokens", path_.string(), begin, begin + n,
         count_);
  for (std::size_t i = 0; i < n; ++i) out[i] = (*this)[begin + i];
}

void write_token_shard(const std::filesystem::path& p, std::span<const int> ids, uint32_t vocab) {
  header h{};
  std::memcpy(h.magic, k_magic, 8);
  h.version = 1;
  h.dtype = vocab <= 65536 ? 1 : 2;
  h.count = ids.size();
  h.vocab = vocab;
  std::vector<char> bytes(sizeof h + ids.size() * (h.dtype == 1 ? 2 : 4));
  std::memcpy(bytes.data(), &h, sizeof h);
  char* d = bytes.data() + sizeof h;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= vocab)
      fail("write_token_shard {}: id {} at {} outside vocab {}", p.string(), ids[i], i, vocab);
    if (h.dtype == 1) {
      uint16_t v = static_cast<uint16_t>(ids[i]);
      std::memcpy(d + 2 * i, &v, 2);
    } else {
      uint32_t v = static_cast<uint32_t>(ids[i]);
      std::memcpy(d + 4 * i, &v, 4);
    }
  }
  write_file_atomic(p, bytes.data(), bytes.size());
}

}  // namespace zf::storage
