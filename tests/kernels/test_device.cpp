// The host side of the cuda device (kernels/device.hpp): refusals without CUDA or without a GPU,
// and on a GPU the pool (round trips, counters, a steady state that stops growing), streams and
// events. The GPU checks skip with a message elsewhere.
#include <doctest/doctest.h>

#include <numeric>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kernels/device.hpp"
#include "kernels/dispatch.hpp"

using namespace zf::kernels;

namespace {

// Why the GPU checks cannot run here ("" when they can).
std::string no_gpu_reason() {
  if (!cuda_built()) return "built without CUDA";
  if (cuda_device_count() == 0) return "no CUDA device visible to this process";
  return {};
}

using zf::test::kernel_error_of;

}  // namespace

TEST_CASE("gpu memory: refused clearly without CUDA or without a GPU") {
  cuda_simulation_scope real(false);
  if (cuda_built() && cuda_device_count() > 0) {
    MESSAGE("SKIPPED the refusal check: this process has a GPU");
    return;
  }
  CHECK(gpu_alloc(0) == nullptr);
  if (!cuda_built()) {
    CHECK(kernel_error_of([] { gpu_alloc(16); }).find("-DZF_CUDA=ON") != std::string::npos);
    CHECK(kernel_error_of([] { gpu_stream s; }).find("built without CUDA") != std::string::npos);
  }
  const std::string m = kernel_error_of([] { gpu_init(0); });
  CHECK(m.find(cuda_built() ? "sees 0 CUDA device" : "built without CUDA") != std::string::npos);
}

namespace {

// On the GPU, or on the simulation's host memory (its pool counters kept the same way).
void check_memory() {
  gpu_init(0);
  std::vector<float> h(1 << 20);
  std::iota(h.begin(), h.end(), 0.0f);
  const auto before = gpu_memory();
  float* d = static_cast<float*>(gpu_alloc(h.size() * sizeof(float)));
  CHECK(gpu_memory().used >= before.used + h.size() * sizeof(float));
  gpu_copy(d, h.data(), h.size() * sizeof(float));
  std::vector<float> back(h.size());
  gpu_copy(back.data(), d, back.size() * sizeof(float));
  gpu_synchronize();
  CHECK(back == h);
  gpu_free(d);
  gpu_synchronize();
  CHECK(gpu_memory().used == before.used);
  // A step's allocations repeated: after the first round the pool serves them from its cache.
  std::uint64_t reserved = 0;
  for (int step = 0; step < 20; ++step) {
    void* a = gpu_alloc(3 << 20);
    void* b = gpu_alloc(5 << 20);
    gpu_free(b);
    gpu_free(a);
    gpu_synchronize();
    if (step == 1) reserved = gpu_memory().reserved;
  }
  CHECK(gpu_memory().reserved == reserved);
  CHECK(gpu_memory().used_high >= (8u << 20));
  CHECK(kernel_error_of([] { gpu_alloc(std::size_t{1} << 50); }).find("out of GPU memory") !=
        std::string::npos);
}

void check_streams() {
  gpu_init(0);
  gpu_stream compute, comm;
  std::vector<float> h(1 << 22, 3.0f), back(h.size());
  float* a = nullptr;
  float* b = nullptr;
  gpu_event start, produced;
  {
    gpu_stream_scope on(compute);
    a = static_cast<float*>(gpu_alloc(h.size() * sizeof(float)));
    b = static_cast<float*>(gpu_alloc(h.size() * sizeof(float)));
    start.record_current();
    gpu_copy(a, h.data(), h.size() * sizeof(float));
    produced.record_current();
  }
  produced.wait_on(comm);
  {
    gpu_stream_scope on(comm);
    gpu_copy(b, a, h.size() * sizeof(float));  // ordered after the upload by the event
    gpu_copy(back.data(), b, back.size() * sizeof(float));
    gpu_synchronize();
  }
  CHECK(back == h);
  produced.synchronize();
  CHECK(produced.ms_since(start) >= 0.0f);
  gpu_stream_scope on(compute);
  gpu_free(a);
  gpu_free(b);
  compute.synchronize();
}

}  // namespace

TEST_CASE("gpu memory: round trips, pool counters, a steady state that stops growing") {
  {
    INFO("simulated");
    cuda_simulation_scope sim;
    check_memory();
  }
  if (const std::string why = no_gpu_reason(); !why.empty()) {
    MESSAGE("SKIPPED the GPU memory check on a GPU: " << why << " (checked simulated only)");
    return;
  }
  cuda_simulation_scope real(false);
  check_memory();
}

TEST_CASE("gpu streams: an event orders a copy on one stream after work on another") {
  {
    INFO("simulated");
    cuda_simulation_scope sim;
    check_streams();
  }
  if (const std::string why = no_gpu_reason(); !why.empty()) {
    MESSAGE("SKIPPED the GPU stream check on a GPU: " << why << " (checked simulated only)");
    return;
  }
  cuda_simulation_scope real(false);
  check_streams();
}
