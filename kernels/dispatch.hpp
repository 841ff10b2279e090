#pragma once
// The one dispatch point of the kernels. Every public zf::kernels::<fn> (declared in
// <family>.hpp) is defined in kernels/dispatch.cpp as a single branch on this thread's current
// device: cpu::<fn> (<family>_cpu.cpp, the reference) or, on the cuda device, cuda::<fn>
// (<family>_cuda.cu compiled by nvcc, same contract, pointers into GPU memory) or, while the
// process simulates CUDA, cuda_sim::<fn> (the same .cu source run by kernels/cuda_sim.hpp on the
// CPU, "GPU memory" being host memory from gpu_alloc). Callers never name a backend.
// Invariants:
// - The current device is per thread and cpu unless set. A rank or engine that owns a GPU sets it
//   once on its own thread (device_scope); worker threads it starts must set it too.
// - Asking for the cuda device throws (kernel_error) in a build without ZF_CUDA or on a machine
//   without a GPU, unless CUDA is simulated (ZF_CUDA_SIM=1 in the environment, or
//   cuda_simulation_scope): then every cuda code path above the kernels (gpu_alloc, copies,
//   streams, the twins) runs on any machine, slowly, and is tested in CI that way.
// - A family that has no cuda twin yet throws kernel_error when called on the cuda device
//   instead of reading GPU pointers on the CPU.
// - The cpu path costs one thread-local load and a predictable branch per call, never a virtual
//   call.
// - Host-only helpers (kernels/convert.hpp) and the CPU thread count are not dispatched.
#include <functional>
#include <stdexcept>

namespace zf::kernels {

enum class device : unsigned char { cpu, cuda };

// Every failure of the dispatch or of a cuda kernel (launch errors, missing twins, no GPU).
struct kernel_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "cpu" / "cuda".
const char* device_name(device d) noexcept;
// True when this binary was built with -DZF_CUDA=ON (zf_kernels_cuda linked in).
bool cuda_built() noexcept;
// GPUs visible to this process; 0 without ZF_CUDA or without a usable driver.
int cuda_device_count() noexcept;

// This thread's device for every following kernel call.
device current_device() noexcept;
// Throws kernel_error for cuda in a build without ZF_CUDA or on a machine without a GPU, unless
// CUDA is simulated.
void set_current_device(device d);

// Whether the cuda device is the CPU simulation (process-wide; ZF_CUDA_SIM=1 at start-up turns it
// on). While on, cuda kernels, gpu_alloc/gpu_copy, streams and events are the simulation's even
// where a GPU is present. Switch it only while no thread runs on the cuda device and no GPU
// memory is held: memory from one side is not the other's.
bool cuda_simulated() noexcept;
void set_cuda_simulated(bool on) noexcept;

class cuda_simulation_scope {
 public:
  explicit cuda_simulation_scope(bool on = true) : prev_(cuda_simulated()) {
    set_cuda_simulated(on);
  }
  ~cuda_simulation_scope() { set_cuda_simulated(prev_); }
  cuda_simulation_scope(const cuda_simulation_scope&) = delete;
  cuda_simulation_scope& operator=(const cuda_simulation_scope&) = delete;

 private:
  bool prev_;
};

// Sets the device for a scope and restores the previous one at its end.
class device_scope {
 public:
  explicit device_scope(device d) : prev_(current_device()) { set_current_device(d); }
  ~device_scope() { set_current_device(prev_); }
  device_scope(const device_scope&) = delete;
  device_scope& operator=(const device_scope&) = delete;

 private:
  device prev_;
};

// Batch-invariant mode, per thread (off unless set): the forward kernels compute every row the
// same way whatever the batch it is in, so a token's logits are the same bits under any batching,
// chunking or preemption and in score mode. While on: gemm with alpha 1, beta 0 or 1 and no
// transposed a runs gemm_invariant (kernels/matmul_invariant.hpp) instead of OpenBLAS;
// attention_forward and paged_attention compute each query row alone with the direct kernel
// (paged_attention.hpp). Training's backward GEMMs (transposed a) are unaffected. Worker threads
// that run kernels for an invariant caller must set it too.
bool batch_invariant() noexcept;
void set_batch_invariant(bool on) noexcept;

class batch_invariant_scope {
 public:
  explicit batch_invariant_scope(bool on) : prev_(batch_invariant()) { set_batch_invariant(on); }
  ~batch_invariant_scope() { set_batch_invariant(prev_); }
  batch_invariant_scope(const batch_invariant_scope&) = delete;
  batch_invariant_scope& operator=(const batch_invariant_scope&) = delete;

 private:
  bool prev_;
};

// Threads a caller lends the kernels that OpenBLAS does not thread (the batch-invariant GEMM,
// which then splits its output columns over them: every element is still computed by the same
// operations, so the bits do not change). run(n, fn) calls fn(i) for every i in [0, n) and
// returns when all have returned (kernels/task_pool); threads counts the caller too. Per
// thread, like the modes above; none lent: one thread.
struct kernel_pool {
  int threads = 1;
  std::function<void(int n, const std::function<void(int)>& fn)> run;
};
const kernel_pool* lent_pool() noexcept;
class kernel_pool_scope {
 public:
  explicit kernel_pool_scope(const kernel_pool* p);
  ~kernel_pool_scope();
  kernel_pool_scope(const kernel_pool_scope&) = delete;
  kernel_pool_scope& operator=(const kernel_pool_scope&) = delete;

 private:
  const kernel_pool* prev_;
};

}  // namespace zf::kernels
