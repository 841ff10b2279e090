#pragma once
// Shared by the integration tests: temp folders, a small fast config, running the CLI binary.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "runtime/core/config.hpp"
#include "test_util.hpp"  // temp_dir

namespace zf::testing {

// A model small enough that 20 steps take about a second on two cores.
inline run_config small_config() {
  run_config c;
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 32;
  c.model.n_positions = 32;
  c.train.batch_size = 4;
  c.train.seq_len = 32;
  c.train.steps = 20;
  c.schedule.warmup = 4;
  c.optimizer.lr = 3e-3;
  c.eval.every = 0;
  c.checkpoint.every = 5;
  c.train.sample_tokens = 0;
  c.train.threads = 1;
  c.data.data_dir = ZF_DATA_DIR;
  return c;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct run_result {
  int code = -1;
  std::string out;  // stdout + stderr
};

// Runs build/zeroflow with args (a shell fragment), capturing both streams.
inline run_result zeroflow(const std::string& args, const std::filesystem::path& scratch) {
  auto log = scratch / "cli.log";
  std::string cmd =
      std::string(ZF_BINARY_DIR) + "/zeroflow " + args + " > " + log.string() + " 2>&1";
  int rc = std::system(cmd.c_str());
  run_result r;
  r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = slurp(log);
  return r;
}

}  // namespace zf::testing
