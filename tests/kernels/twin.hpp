#pragma once
// Twin checks: one test body runs a <family>_cuda.cu kernel two ways and compares it with the cpu
// kernel:
// - `sim`: the source compiled by the host compiler and run by kernels/cuda_sim.hpp on host
//   memory (the dispatch's cuda device while CUDA is simulated). Every build runs it.
// - `gpu`: the nvcc build on a GPU, called through the public dispatch on device::cuda with GPU
//   buffers. Only a ZF_CUDA build on a machine with a GPU; elsewhere the test prints one
//   "SKIPPED ... on a GPU" message saying why.
// A body is a generic lambda over the backend `b`: b.upload(host vector) gives a buffer whose .p
// the kernel takes, .host() reads it back; ZF_TWIN(b, fn, args...) calls the backend's fn.
// This header must not pull in kernels/cuda_sim.hpp: a ZF_CUDA test binary also sees the real
// cuda_runtime.h, and the simulation defines the same runtime names.
#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <vector>

#include "kernels/dispatch.hpp"
#if defined(ZF_CUDA)
#include <cuda_runtime.h>
#endif

namespace zf::test::twin {

struct sim {
  static constexpr bool simulated = true;
  static constexpr const char* name = "cuda_sim";
  template <class T>
  struct buffer {
    std::vector<T> h;
    T* p;
    explicit buffer(std::vector<T> v) : h(std::move(v)), p(h.data()) {}
    buffer(const buffer&) = delete;
    std::vector<T> host() const { return h; }
  };
  template <class T>
  buffer<T> upload(const std::vector<T>& v) const {
    return buffer<T>(v);
  }
};

#if defined(ZF_CUDA)
struct gpu {
  static constexpr bool simulated = false;
  static constexpr const char* name = "cuda";
  template <class T>
  struct buffer {
    T* p = nullptr;
    std::size_t n = 0;
    explicit buffer(const std::vector<T>& v) : n(v.size()) {
      REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T) + 16) == cudaSuccess);
      if (n) {
        REQUIRE(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
      }
    }
    buffer(const buffer&) = delete;
    ~buffer() { cudaFree(p); }
    std::vector<T> host() const {
      std::vector<T> h(n);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      if (n) {
        REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
      }
      return h;
    }
  };
  template <class T>
  buffer<T> upload(const std::vector<T>& v) const {
    return buffer<T>(v);
  }
};
#endif

// Runs body(sim{}) and, where a GPU can run it, body(gpu{}); otherwise says why not.
template <class F>
void both(const std::string& what, F&& body) {
  {
    INFO("backend cuda_sim");
    body(sim{});
  }
#if defined(ZF_CUDA)
  if (kernels::cuda_device_count() > 0) {
    INFO("backend cuda");
    body(gpu{});
    return;
  }
  MESSAGE("SKIPPED " << what << " on a GPU: no CUDA device visible to this process (checked "
                     << "in the simulation only)");
#else
  MESSAGE("SKIPPED " << what << " on a GPU: built without CUDA (checked in the simulation only)");
#endif
}

}  // namespace zf::test::twin

// Calls backend b's twin of zf::kernels::fn through the public dispatch on device::cuda, with the
// CUDA simulation on (sim) or off (gpu): so the dispatch's cuda branch is tested in every build
// too. Use inside a twin body (b is dependent there).
#define ZF_TWIN(b, fn, ...)                                                                 \
  [&]() -> decltype(auto) {                                                                 \
    ::zf::kernels::cuda_simulation_scope zf_twin_sim(std::decay_t<decltype(b)>::simulated); \
    ::zf::kernels::device_scope zf_twin_on(::zf::kernels::device::cuda);                    \
    return ::zf::kernels::fn(__VA_ARGS__);                                                  \
  }()
