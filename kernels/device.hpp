#pragma once
// GPU memory, copies, streams and events for whoever owns a GPU (a rank, an engine): the host side
// of the cuda device. Handles are opaque (no CUDA header here), so runtime code builds without
// the toolkit. While CUDA is simulated (kernels/dispatch.hpp, cuda_simulated()) all of it is the
// simulation's: host memory with the pool's counters kept alike, tokens for streams and events
// (device_sim.cpp). Otherwise, in a build without ZF_CUDA every call throws kernel_error naming
// ZF_CUDA.
// Fresh GPU memory holds garbage, as cudaMalloc's does (the simulation fills it with NaN bytes so
// that a read before a write shows): clear what must start at zero with gpu_zero.
// Memory: device memory comes from the GPU's stream-ordered pool (cudaMallocAsync on the current
// stream). gpu_init raises the pool's release threshold to "never", so a freed block goes back to
// the pool, not to the driver, and a training or decoding step that frees and allocates the same
// sizes every iteration never reaches cudaMalloc (what PyTorch's caching allocator does by hand).
// memory_stats reads the pool's own counters.
#include <cstddef>
#include <cstdint>

#include "kernels/dispatch.hpp"

namespace zf::kernels {

// Makes GPU `ordinal` this thread's GPU (cudaSetDevice) and configures its pool. Call once per
// thread that runs cuda kernels, before the first allocation.
void gpu_init(int ordinal);

// bytes of GPU memory, ordered on this thread's current stream (gpu_stream_scope); throws
// kernel_error ("out of GPU memory ...") when the pool cannot grow. 0 bytes gives nullptr.
void* gpu_alloc(std::size_t bytes);
// Returns p (from gpu_alloc) to the pool in stream order; nullptr is ignored.
void gpu_free(void* p) noexcept;
// bytes between any two of host and GPU memory (the direction is inferred), queued on the current
// stream. Host memory must stay valid until the stream reaches the copy (gpu_synchronize) unless
// it is pageable host -> device, which the runtime stages before returning.
void gpu_copy(void* dst, const void* src, std::size_t bytes);
// Sets bytes of GPU memory at p to zero, queued on the current stream (cudaMemsetAsync).
void gpu_zero(void* p, std::size_t bytes);
// Waits for everything queued on this thread's current stream.
void gpu_synchronize();

struct gpu_memory_stats {
  std::uint64_t reserved = 0;       // bytes the pool holds from the driver now
  std::uint64_t used = 0;           // bytes handed out and not freed
  std::uint64_t reserved_high = 0;  // high-water marks since gpu_init
  std::uint64_t used_high = 0;
};
gpu_memory_stats gpu_memory();
// Bytes this thread's GPU has free now (cudaMemGetInfo; the simulation: its size less what is
// held), for the check that a run fits before it allocates.
std::uint64_t gpu_free_bytes();

// A non-blocking stream of this thread's GPU (its work does not order against the legacy
// default stream): one for compute, one for communication, so that the two overlap.
class gpu_stream {
 public:
  gpu_stream();
  ~gpu_stream();
  gpu_stream(const gpu_stream&) = delete;
  gpu_stream& operator=(const gpu_stream&) = delete;
  void* handle() const noexcept { return s_; }  // cudaStream_t
  void synchronize();

 private:
  void* s_ = nullptr;
};

// Makes `s` the stream this thread's kernels, allocations and copies queue on, for a scope
// (nullptr: the legacy default stream).
class gpu_stream_scope {
 public:
  explicit gpu_stream_scope(const gpu_stream& s);
  ~gpu_stream_scope();
  gpu_stream_scope(const gpu_stream_scope&) = delete;
  gpu_stream_scope& operator=(const gpu_stream_scope&) = delete;

 private:
  void* prev_ = nullptr;
};

// A point in a stream: record it on one stream, make another stream (or the host) wait for it.
// Timing is on, so two events give the GPU time between them.
class gpu_event {
 public:
  gpu_event();
  ~gpu_event();
  gpu_event(const gpu_event&) = delete;
  gpu_event& operator=(const gpu_event&) = delete;
  void record(const gpu_stream& s);
  void record_current();                         // on this thread's current stream
  void wait_on(const gpu_stream& s) const;       // s waits for this event (the host does not)
  void synchronize() const;                      // the host waits
  float ms_since(const gpu_event& start) const;  // both recorded and reached

 private:
  void* e_ = nullptr;
};

}  // namespace zf::kernels
