// The fiber scheduler behind kernels/cuda_sim.hpp. One launch at a time per OS thread: blocks run
// in order; within a block every thread is a ucontext fiber with its own stack, resumed in
// linear-id order until it reaches a barrier or returns. After each pass the barriers whose
// participants have all arrived are released; a pass that moves nobody is a deadlock.
// Stacks and fibers are allocated once per OS thread and reused by every launch.
#include "kernels/cuda_sim.hpp"

#include <ucontext.h>
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dispatch.hpp"

namespace zf::sim {
namespace {

constexpr std::size_t k_stack_bytes = 128 * 1024;
constexpr unsigned k_max_threads = 1024;
constexpr std::size_t k_max_shared = 227 * 1024;  // an H100's per-block opt-in limit

enum class wait : unsigned char { run, block, warp, done };

// ThreadSanitizer follows one stack per thread unless told of fibers; ASan intercepts swapcontext.
#if defined(__SANITIZE_THREAD__)
struct tsan_fiber {
  void* f = nullptr;
  tsan_fiber() = default;
  tsan_fiber(tsan_fiber&& o) noexcept : f(o.f) { o.f = nullptr; }
  tsan_fiber& operator=(tsan_fiber&&) = delete;
  ~tsan_fiber() {
    if (f) __tsan_destroy_fiber(f);
  }
};
inline void* tsan_new_fiber() {
  return __tsan_create_fiber(0);
}
inline void tsan_switch(void* f) {
  __tsan_switch_to_fiber(f, 0);
}
#else
struct tsan_fiber {
  void* f = nullptr;
};
inline void* tsan_new_fiber() {
  return nullptr;
}
inline void tsan_switch(void*) {}
#endif

struct fiber {
  ucontext_t ctx{};
  tsan_fiber tsan;
  std::unique_ptr<char[]> stack;
  wait state = wait::run;
  unsigned shuffles = 0;  // shuffles this lane has made in the block (picks the buffer)
};

struct block_state {
  ucontext_t main{};
  void* main_tsan = nullptr;  // the OS thread's own fiber, for ThreadSanitizer
  std::vector<fiber> fibers;
  unsigned n = 0;        // threads in this block
  unsigned current = 0;  // linear id of the running fiber
  unsigned passes = 0;   // scheduling passes so far on this OS thread (picks each pass's order)
  thread_coords coords{};
  std::vector<unsigned char> shared;
  // Two shuffle buffers per warp: a lane can be at most one shuffle ahead of another.
  std::vector<std::uint64_t> lanes;  // [warps][2][32]
  const std::function<void()>* fn = nullptr;
  cudaError_t last_error = cudaSuccess;
  bool in_launch = false;
  std::string fault;  // set inside a fiber (which must not throw), thrown after the block
};

thread_local block_state t_state;

void set_coords(block_state& s, unsigned linear) {
  const dim3 b = s.coords.block_dim;
  s.coords.thread_idx = dim3(linear % b.x, (linear / b.x) % b.y, linear / (b.x * b.y));
}

void fiber_entry() {
  block_state& s = t_state;
  (*s.fn)();
  s.fibers[s.current].state = wait::done;
  tsan_switch(s.main_tsan);
  // returning resumes uc_link (the scheduler)
}

void park(wait w) {
  block_state& s = t_state;
  if (!s.in_launch) throw zf::kernels::kernel_error("cuda sim: a barrier outside a kernel launch");
  s.fibers[s.current].state = w;
  tsan_switch(s.main_tsan);
  swapcontext(&s.fibers[s.current].ctx, &s.main);
  set_coords(s, s.current);
}

unsigned warp_live(const block_state& s, unsigned warp) {
  const unsigned begin = warp * 32;
  return s.n - begin < 32 ? s.n - begin : 32;
}

// Releases the barriers whose participants have all arrived; false when none could be.
bool release(block_state& s) {
  unsigned at_block = 0, done = 0;
  for (unsigned i = 0; i < s.n; ++i) {
    at_block += s.fibers[i].state == wait::block;
    done += s.fibers[i].state == wait::done;
  }
  bool moved = false;
  if (at_block > 0 && at_block + done == s.n) {
    for (unsigned i = 0; i < s.n; ++i)
      if (s.fibers[i].state == wait::block) s.fibers[i].state = wait::run;
    moved = true;
  }
  for (unsigned w = 0; w * 32 < s.n; ++w) {
    unsigned at_warp = 0, live = 0;
    for (unsigned i = w * 32; i < w * 32 + warp_live(s, w); ++i) {
      at_warp += s.fibers[i].state == wait::warp;
      live += s.fibers[i].state != wait::done;
    }
    if (at_warp > 0 && at_warp == live) {
      for (unsigned i = w * 32; i < w * 32 + warp_live(s, w); ++i)
        if (s.fibers[i].state == wait::warp) s.fibers[i].state = wait::run;
      moved = true;
    }
  }
  return moved;
}

void run_block(block_state& s) {
  for (unsigned i = 0; i < s.n; ++i) {
    fiber& f = s.fibers[i];
    if (!f.stack) f.stack = std::make_unique<char[]>(k_stack_bytes);
    if (!f.tsan.f) f.tsan.f = tsan_new_fiber();
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = k_stack_bytes;
    f.ctx.uc_link = &s.main;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = wait::run;
    f.shuffles = 0;
  }
  for (;;) {
    bool ran = false;
    // Between two barriers the threads run one after another, in an order that changes from pass
    // to pass (forward or backward, from a rotating start): a read of another thread's write with
    // no barrier between them then sees the old value in some pass, as a GPU may.
    const unsigned start = (s.passes * 2654435761u) % s.n;
    const bool backward = (s.passes++ & 1u) != 0;
    for (unsigned j = 0; j < s.n; ++j) {
      const unsigned i = backward ? (start + s.n - j) % s.n : (start + j) % s.n;
      if (s.fibers[i].state != wait::run) continue;
      s.current = i;
      set_coords(s, i);
      tsan_switch(s.fibers[i].tsan.f);
      swapcontext(&s.main, &s.fibers[i].ctx);
      ran = true;
    }
    unsigned done = 0;
    for (unsigned i = 0; i < s.n; ++i) done += s.fibers[i].state == wait::done;
    if (done == s.n) return;
    if (!release(s) && !ran) {
      throw zf::kernels::kernel_error(
          "cuda sim: deadlock: the threads of a block wait at different barriers "
          "(__syncthreads in divergent code, or a warp shuffle not every live lane reaches)");
    }
  }
}

}  // namespace

const thread_coords& coords() noexcept {
  return t_state.coords;
}

void* dynamic_shared_bytes() noexcept {
  return t_state.shared.data();
}

void sync_block() {
  park(wait::block);
}

void sync_warp() {
  park(wait::warp);
}

int lane_id() noexcept {
  return static_cast<int>(t_state.current % 32);
}

std::uint64_t exchange(std::uint64_t mine, int src_lane) {
  block_state& s = t_state;
  const unsigned me = s.current, warp = me / 32;
  fiber& f = s.fibers[me];
  std::uint64_t* buf = &s.lanes[(warp * 2 + (f.shuffles & 1u)) * 32];
  ++f.shuffles;
  buf[me % 32] = mine;
  park(wait::warp);
  const unsigned live = warp_live(s, warp);
  if (src_lane < 0 || static_cast<unsigned>(src_lane) >= live) {
    // A lane the block does not have: undefined on the hardware (a partial last warp).
    if (s.fault.empty()) {
      s.fault = "cuda sim: thread " + std::to_string(me) + " shuffles from lane " +
                std::to_string(src_lane) + " of warp " + std::to_string(warp) +
                ", which has only " + std::to_string(live) + " threads (block of " +
                std::to_string(s.n) + ")";
    }
    return mine;
  }
  return buf[src_lane];
}

void run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, const std::function<void()>& fn) {
  block_state& s = t_state;
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > k_max_threads ||
      block.z > 64 || grid.y > 65535 || grid.z > 65535 || shared_bytes > k_max_shared) {
    s.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (s.in_launch) throw zf::kernels::kernel_error("cuda sim: a launch inside a kernel");
  s.n = static_cast<unsigned>(threads);
#if defined(__SANITIZE_THREAD__)
  if (!s.main_tsan) s.main_tsan = __tsan_get_current_fiber();
#endif
  if (s.fibers.size() < s.n) s.fibers.resize(s.n);
  s.lanes.assign(((s.n + 31) / 32) * 2 * 32, 0);
  s.fn = &fn;
  s.coords.block_dim = block;
  s.coords.grid_dim = grid;
  s.in_launch = true;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          s.coords.block_idx = dim3(x, y, z);
          s.shared.assign(shared_bytes, 0xff);
          s.fault.clear();
          run_block(s);
          if (!s.fault.empty()) throw zf::kernels::kernel_error(s.fault);
        }
  } catch (...) {
    s.in_launch = false;
    throw;
  }
  s.in_launch = false;
}

cudaError_t take_last_error() noexcept {
  const cudaError_t e = t_state.last_error;
  t_state.last_error = cudaSuccess;
  return e;
}

void set_last_error(cudaError_t e) noexcept {
  t_state.last_error = e;
}

}  // namespace zf::sim

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  return zf::sim::take_last_error();
}

cudaError_t cudaPeekAtLastError() {
  const cudaError_t e = zf::sim::take_last_error();
  zf::sim::set_last_error(e);
  return e;
}

cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  if (bytes > (std::size_t{1} << 40)) {  // the simulated GPU's size (device_sim.cpp)
    *p = nullptr;
    return cudaErrorMemoryAllocation;
  }
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** p, std::size_t bytes, cudaStream_t) {
  return cudaMalloc(p, bytes);
}

cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  return cudaFree(p);
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind k,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}

cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  return cudaSuccess;
}
