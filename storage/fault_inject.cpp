#include "storage/fault_inject.hpp"

namespace zf::storage::detail {

std::atomic<bool> io_faults_armed{false};

namespace {
std::atomic<std::int64_t> g_steps{0}, g_fail_from{0};
std::atomic<int> g_err{0};
}  // namespace

int io_fault_counted() noexcept {
  const std::int64_t n = g_steps.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::int64_t from = g_fail_from.load(std::memory_order_relaxed);
  return from > 0 && n >= from ? g_err.load(std::memory_order_relaxed) : 0;
}

void arm_io_faults(std::int64_t fail_from, int err) noexcept {
  g_steps.store(0, std::memory_order_relaxed);
  g_fail_from.store(fail_from, std::memory_order_relaxed);
  g_err.store(err, std::memory_order_relaxed);
  // Threads started after this (the commit's writers) see the values above: thread creation
  // orders them. Arming while a commit runs is not supported.
  io_faults_armed.store(true, std::memory_order_relaxed);
}

std::int64_t disarm_io_faults() noexcept {
  io_faults_armed.store(false, std::memory_order_relaxed);
  return g_steps.load(std::memory_order_relaxed);
}

}  // namespace zf::storage::detail
