#pragma once
// Shared by the fuzz_<name>.cpp targets: a private scratch folder for the parsers that only read
// files (safetensors, tokenizer.json, checkpoint manifests), and the check that turns a broken
// invariant into a crash libFuzzer records.
//
// The scratch folder is /dev/shm/zf-fuzz-<target>-<pid> (tmpfs: a write per input costs no disk
// I/O; $TMPDIR or /tmp where /dev/shm is missing), one per process so that `-jobs`/`-fork`
// workers and parallel targets never share files; it is removed at exit.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

namespace zf::fuzz {

inline std::filesystem::path& scratch_root() {
  static std::filesystem::path root;
  return root;
}

// Creates the scratch folder once; later calls return it.
inline const std::filesystem::path& scratch_dir(std::string_view target) {
  auto& root = scratch_root();
  if (!root.empty()) return root;
  std::error_code ec;
  std::filesystem::path base = "/dev/shm";
  if (!std::filesystem::is_directory(base, ec)) {
    const char* t = std::getenv("TMPDIR");
    base = t && *t ? t : "/tmp";
  }
  root = base / ("zf-fuzz-" + std::string(target) + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root, ec);
  std::filesystem::create_directories(root);
  std::atexit([] {
    std::error_code ignored;
    std::filesystem::remove_all(scratch_root(), ignored);
  });
  return root;
}

inline void write_file(const std::filesystem::path& p, const void* data, std::size_t n) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", p.c_str());
    std::abort();
  }
}

inline void write_file(const std::filesystem::path& p, std::string_view s) {
  write_file(p, s.data(), s.size());
}

// Consumes a value computed from what the code under test returned, so that the optimiser
// keeps the calls that produced it.
inline void keep(std::size_t v) {
  static volatile std::size_t sink;
  sink = sink + v;
}

// A broken invariant of the code under test: abort, which libFuzzer reports as a crash and
// saves the input for.
#define ZF_FUZZ_CHECK(cond, ...)                              \
  do {                                                        \
    if (!(cond)) {                                            \
      std::fprintf(stderr, "fuzz check failed: %s: ", #cond); \
      std::fprintf(stderr, __VA_ARGS__);                      \
      std::fprintf(stderr, "\n");                             \
      std::abort();                                           \
    }                                                         \
  } while (0)

}  // namespace zf::fuzz
