// kernels/device.hpp for the CPU simulation of CUDA (cuda_simulated()): "GPU memory" is host
// memory, copies are memcpy, streams and events are tokens and the work they order has always
// run already (a simulated kernel runs at its launch). The pool's counters are kept as the
// driver's pool keeps them, so code that reads gpu_memory() is tested too.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kernels/cuda_compat.cuh"  // the simulation's runtime and this thread's stream
#include "kernels/device_impl.hpp"

namespace zf::kernels::cuda_sim {
namespace {

struct pool_state {
  std::mutex mu;
  std::unordered_map<void*, std::size_t> live;  // pointer -> bytes
  gpu_memory_stats stats;
};

pool_state& pool() {
  static pool_state p;
  return p;
}

struct sim_event {
  std::chrono::steady_clock::time_point at{};
};

}  // namespace

void gpu_init(int ordinal) {
  if (ordinal != 0) {
    throw kernel_error("GPU " + std::to_string(ordinal) +
                       " requested, but the CUDA simulation has one device (0)");
  }
}

// The simulated GPU's memory: larger requests fail as a GPU's would (and before the host
// allocator, which sanitizers abort on for absurd sizes).
constexpr std::size_t k_sim_capacity = std::size_t{1} << 40;

void* gpu_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes > k_sim_capacity) {
    throw kernel_error("out of GPU memory: " + std::to_string(bytes) +
                       " bytes requested (the simulated GPU has " + std::to_string(k_sim_capacity) +
                       ")");
  }
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!p) throw kernel_error("out of GPU memory: " + std::to_string(bytes) + " bytes requested");
  std::memset(p, 0xff, bytes);  // a GPU's fresh memory is garbage: NaN floats show a missed clear
  pool_state& s = pool();
  std::lock_guard<std::mutex> lock(s.mu);
  s.live[p] = bytes;
  s.stats.used += bytes;
  s.stats.reserved = s.stats.used > s.stats.reserved ? s.stats.used : s.stats.reserved;
  if (s.stats.used > s.stats.used_high) s.stats.used_high = s.stats.used;
  if (s.stats.reserved > s.stats.reserved_high) s.stats.reserved_high = s.stats.reserved;
  return p;
}

void gpu_free(void* p) noexcept {
  if (!p) return;
  pool_state& s = pool();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.live.find(p);
    if (it == s.live.end()) return;  // not ours: ignored, as the runtime would report it
    s.stats.used -= it->second;
    s.live.erase(it);
  }
  std::free(p);
}

void gpu_copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}

void gpu_zero(void* p, std::size_t bytes) {
  if (bytes) std::memset(p, 0, bytes);
}

void gpu_synchronize() {}

std::uint64_t gpu_free_bytes() {
  pool_state& s = pool();
  std::lock_guard<std::mutex> lock(s.mu);
  return k_sim_capacity - s.stats.used;
}

gpu_memory_stats gpu_memory() {
  pool_state& s = pool();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.stats;
}

void* stream_create() {
  return new int(0);
}
void stream_destroy(void* s) noexcept {
  delete static_cast<int*>(s);
}
void stream_synchronize(void*) {}

void* exchange_stream(void* s) noexcept {
  void* prev = tl_stream;
  tl_stream = static_cast<cudaStream_t>(s);
  return prev;
}

void* event_create() {
  return new sim_event;
}
void event_destroy(void* e) noexcept {
  delete static_cast<sim_event*>(e);
}
void event_record(void* e, void*) {
  static_cast<sim_event*>(e)->at = std::chrono::steady_clock::now();
}
void event_wait(void*, void*) {}
void event_synchronize(void*) {}
float event_ms(void* start, void* end) {
  return std::chrono::duration<float, std::milli>(static_cast<sim_event*>(end)->at -
                                                  static_cast<sim_event*>(start)->at)
      .count();
}

}  // namespace zf::kernels::cuda_sim
