#pragma once
// A fault-injection seam for the checkpoint commit, so that a test can show what a full disk
// does at every step of it: a commit must fail with a message naming the file, leave the
// previous checkpoint loadable, leave nothing that a reader takes for a checkpoint, and leave
// nothing that blocks a retry. Real full disks cannot be produced at a chosen step in a unit
// test; this seam can.
//
// Every I/O step of a commit (folder creation, each data-file create / write / fsync, the
// manifest's, renames, folder fsyncs, `latest`) calls io_fault() first and, when it returns an
// errno, fails as if its system call had returned that error. Unarmed, that is one relaxed
// atomic load. Only a test arms it: there is no config key, flag or environment variable that
// reaches it.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>

namespace zf::storage::detail {

extern std::atomic<bool> io_faults_armed;
int io_fault_counted() noexcept;  // the armed path: counts the step, maybe fails it

// 0, or the errno this I/O step is to fail with.
inline int io_fault() noexcept {
  return io_faults_armed.load(std::memory_order_relaxed) ? io_fault_counted() : 0;
}
// For call sites that report through errno: true (errno set) when this step is to fail.
inline bool io_fails() noexcept {
  const int e = io_fault();
  if (e) errno = e;
  return e != 0;
}
// For call sites that report through std::error_code (std::filesystem).
inline std::error_code io_fault_ec() noexcept {
  return {io_fault(), std::generic_category()};
}

// Test-only. Counts I/O steps from now on (any thread); every step from the fail_from-th on
// (1-based) fails with err, as a disk that filled up at that step would fail every later one.
// fail_from = 0 only counts.
void arm_io_faults(std::int64_t fail_from, int err = ENOSPC) noexcept;
// Stops counting and failing; returns the steps counted since arm_io_faults.
std::int64_t disarm_io_faults() noexcept;

}  // namespace zf::storage::detail
