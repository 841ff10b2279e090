#pragma once
// Internal to storage/: the names and constants the checkpoint writer (checkpoint_write.cpp)
// and reader (checkpoint.cpp) must agree on. Not part of the checkpoint API.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"

namespace zf::storage::detail {

inline constexpr const char* k_magic = "zeroflow-checkpoint";
inline constexpr const char* k_manifest = "manifest";
inline constexpr uint64_t k_page = 4096;  // data sections start page-aligned (O_DIRECT)

inline std::string step_name(int step) {
  return fmt::format("step-{:06d}", step);
}
inline std::string rank_file(int rank) {
  return fmt::format("rank-{:05d}.bin", rank);
}
inline uint64_t round_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}
// "step-" followed by digits only (not .tmp / .del leftovers).
bool is_step_dir_name(const std::string& n);
// ROOT's step folders by step number (step-1000000 after step-999999); none if ROOT is missing.
std::vector<std::filesystem::path> step_dirs(const std::filesystem::path& root);

inline std::filesystem::path manifest_path(const std::filesystem::path& dir) {
  return dir / k_manifest;
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (auto d : s) {
    if (!out.empty()) out += ',';
    out += std::to_string(d);
  }
  return out;
}

inline void check_range(const param_layout& L, std::size_t begin, std::size_t end,
                        const char* what) {
  if (begin > end || end > L.total)
    fail("{}: slice [{}, {}) is outside the layout's {} parameters", what, begin, end, L.total);
}

inline constexpr std::size_t k_io = 16u << 20;  // read granularity

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f = -1) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  void reset(int f) {
    if (fd >= 0) ::close(fd);
    fd = f;
  }
};

// Bytes read (fewer than n only at end of file); zf::error naming p on a failed read.
std::size_t pread_all(int fd, void* dst, std::size_t n, uint64_t off,
                      const std::filesystem::path& p);
// Whether [offset, offset + length) reaches past `size` bytes.
bool past_end(const fragment& f, uint64_t size);

}  // namespace zf::storage::detail
