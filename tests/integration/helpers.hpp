#pragma once
// Shared by the integration tests: temp folders, a small fast config, running the CLI binary.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

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

// `zeroflow serve --port 0 --threads 1 ARGS` run in folder `cwd` (empty: this one), its output
// in `log`, on the ephemeral port its "... on http://HOST:PORT" line says; SIGINT and reaped at
// stop() or scope exit.
struct serve_process {
  pid_t pid = -1;
  int port = 0;
  std::filesystem::path log;
  serve_process(const std::string& args, std::filesystem::path log_file,
                const std::filesystem::path& cwd = {})
      : log(std::move(log_file)) {
    pid = fork();
    if (pid == 0) {
      const std::string cd = cwd.empty() ? "" : "cd " + cwd.string() + " && ";
      const std::string cmd = cd + "exec " + ZF_BINARY_DIR +
                              "/zeroflow serve --port 0 --threads 1 " + args + " > " +
                              log.string() + " 2>&1";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300 && port == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::string s = slurp(log);
      auto at = s.find(" on http://");  // any host: "on http://HOST:PORT/v1"
      if (at != std::string::npos) at = s.find(':', at + 11);
      if (at != std::string::npos) port = std::atoi(s.c_str() + at + 1);
    }
    REQUIRE_MESSAGE(port > 0, slurp(log));
  }
  serve_process(const serve_process&) = delete;
  serve_process& operator=(const serve_process&) = delete;
  int stop() {
    if (pid <= 0) return -1;
    kill(pid, SIGINT);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~serve_process() { stop(); }
};

}  // namespace zf::testing
