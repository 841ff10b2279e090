#pragma once
// Helpers shared by the test binaries: unique temp folders, the message of an expected zf::error.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace zf::testing {

// A fresh folder under the system temp dir, removed with everything in it at scope exit.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(std::string_view tag) {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           fmt::format("zf_{}_{}_{}", tag, ::getpid(), counter.fetch_add(1));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(std::string_view name) const { return path / name; }
};

// Runs f, which must throw zf::error; returns its message (a failed check if it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const zf::error& e) {
    return e.what();
  }
  FAIL_CHECK("expected zf::error");
  return {};
}

inline bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// max |a - b| / max |b| over n values (logits against a reference).
inline double rel_diff(const float* a, const float* b, int n) {
  double d = 0, m = 0;
  for (int i = 0; i < n; ++i) {
    d = std::max(d, std::abs(double(a[i]) - b[i]));
    m = std::max(m, std::abs(double(b[i])));
  }
  return d / m;
}

// The same against a reference vector (its size), and the plain max |a - b| when b is all zero.
inline double rel_diff(const float* a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::abs(double(a[i]) - b[i]));
    m = std::max(m, std::abs(double(b[i])));
  }
  return m > 0 ? d / m : d;
}

// The logits the PyTorch twin computes for `ids` from an exported Hugging Face file
// (tests/golden/read_export.py): [ids.size()][V] as JSON rows. Empty when python3 + torch are
// missing (the caller says it skipped).
inline std::vector<std::vector<double>> twin_logits_of_export(const std::string& file,
                                                              const std::vector<int>& ids) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) return {};
  std::string list;
  for (int i : ids) list += (list.empty() ? "" : ",") + std::to_string(i);
  const std::string cmd =
      "/usr/bin/python3 " ZF_SOURCE_DIR "/tests/golden/read_export.py " + file + " --ids " + list;
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  REQUIRE(::pclose(pipe) == 0);
  return nlohmann::json::parse(out)["logits"].get<std::vector<std::vector<double>>>();
}

// The training hyper-parameters a twin's golden file records in its metadata (gen_golden.py's
// CONFIG keys: steps, lr, warmup, min_lr_ratio, beta1, beta2, eps, weight_decay, grad_clip).
template <class Metadata, class TrainConfig>
void read_train_metadata(const Metadata& md, TrainConfig& t) {
  auto d = [&](const char* k) { return std::stod(md.at(k)); };
  t.train.steps = std::stoi(md.at("steps"));
  t.optimizer.lr = d("lr");
  t.schedule.warmup = std::stoi(md.at("warmup"));
  t.schedule.min_lr_ratio = d("min_lr_ratio");
  t.optimizer.beta1 = d("beta1");
  t.optimizer.beta2 = d("beta2");
  t.optimizer.eps = d("eps");
  t.optimizer.weight_decay = d("weight_decay");
  t.optimizer.grad_clip = d("grad_clip");
}

}  // namespace zf::testing
