#pragma once
// Communicator groups for the comm tests: run a body on one thread per rank, and a Gloo group
// whose ranks are threads of this process.
#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/dist/comm.hpp"

namespace zf::testing {

using comm_group = std::vector<std::unique_ptr<comm::communicator>>;

// Runs fn(comm) on one thread per rank, joins, rethrows the first failure (lowest rank).
inline void on_ranks(comm_group& g, const std::function<void(comm::communicator&)>& fn) {
  std::vector<std::exception_ptr> errors(g.size());
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < g.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        fn(*g[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Gloo group of `w` ranks as threads of this process, all on one store object (two file stores
// of one process on one folder could pick the same temporary file names).
inline comm_group make_gloo_group(int w, const std::filesystem::path& dir,
                                  const std::string& prefix, const comm::gloo_options& o) {
  const auto store = comm::make_file_store(dir);
  comm_group g(static_cast<std::size_t>(w));
  std::vector<std::thread> threads;
  std::vector<std::string> errors(g.size());
  for (int r = 0; r < w; ++r)
    threads.emplace_back([&, r] {
      try {
        g[static_cast<std::size_t>(r)] = comm::make_gloo(r, w, store, "127.0.0.1", prefix, o);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) REQUIRE(e.empty());
  return g;
}

inline comm::gloo_options quick_options(std::chrono::milliseconds op) {
  comm::gloo_options o;
  o.rendezvous_timeout = std::chrono::seconds(10);
  o.op_timeout = op;
  o.timeout_key = "train.comm_timeout_s";
  return o;
}

}  // namespace zf::testing
