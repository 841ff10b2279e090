// The dispatch point (kernels/dispatch.hpp): the device per thread, refusals without CUDA or a
// GPU. The twins themselves are checked by test_twin_*.cpp (tests/kernels/twin.hpp).
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "kernels/activation.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/moe.hpp"

using namespace zf::kernels;

namespace {

using zf::test::kernel_error_of;

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// True when the cuda checks can run; otherwise reports why they are skipped.
bool gpu_or_skip(const std::string& what) {
  if (!cuda_built()) {
    MESSAGE("SKIPPED " << what << ": built without CUDA (configure with -DZF_CUDA=ON)");
    return false;
  }
  if (cuda_device_count() == 0) {
    MESSAGE("SKIPPED " << what << ": no CUDA device visible to this process");
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("dispatch: cpu by default, device_scope restores, names") {
  CHECK(current_device() == device::cpu);
  CHECK(std::string(device_name(device::cpu)) == "cpu");
  CHECK(std::string(device_name(device::cuda)) == "cuda");
  {
    device_scope s(device::cpu);
    CHECK(current_device() == device::cpu);
  }
  CHECK(current_device() == device::cpu);
  CHECK(cuda_device_count() >= 0);
  if (!cuda_built()) CHECK(cuda_device_count() == 0);
}

TEST_CASE("dispatch: cuda without a CUDA build or without a GPU is refused clearly") {
  cuda_simulation_scope real(false);
  if (cuda_built() && cuda_device_count() > 0) {
    MESSAGE("SKIPPED the refusal check: this process has a GPU, so device cuda is allowed");
    return;
  }
  const std::string m = kernel_error_of([] { set_current_device(device::cuda); });
  CHECK(current_device() == device::cpu);
  if (!cuda_built()) {
    CHECK(contains(m, "built without CUDA"));
    CHECK(contains(m, "-DZF_CUDA=ON"));
  } else {
    CHECK(contains(m, "no CUDA device"));
  }
  CHECK_THROWS_AS(device_scope(device::cuda), kernel_error);
  CHECK(current_device() == device::cpu);
}

TEST_CASE("dispatch: simulated cuda is allowed anywhere and runs the twins on host memory") {
  cuda_simulation_scope sim;
  CHECK(cuda_simulated());
  device_scope s(device::cuda);
  CHECK(current_device() == device::cuda);
  std::vector<float> x{-1.0f, 0.0f, 2.0f}, y(3, 9.0f), want(3);
  cpu::gelu_forward(x.data(), want.data(), 3);
  gelu_forward(x.data(), y.data(), 3);  // the dispatch's cuda branch: cuda_sim::gelu_forward
  for (int i = 0; i < 3; ++i) CHECK(y[i] == doctest::Approx(want[i]).epsilon(1e-6));
  float z = 1.0f, p = 0.0f;
  CHECK(contains(kernel_error_of([&] { router_scores(&z, &p, 1, 1, false); }),
                 "router_scores has no cuda kernel"));
}

TEST_CASE("dispatch: on cuda, families without a twin refuse, the device is per thread") {
  cuda_simulation_scope real(false);
  if (!gpu_or_skip("the cuda dispatch check")) return;
  device_scope s(device::cuda);
  CHECK(current_device() == device::cuda);
  float z = 1.0f, p = 0.0f;
  const std::string m = kernel_error_of([&] { router_scores(&z, &p, 1, 1, false); });
  CHECK(contains(m, "router_scores has no cuda kernel"));
  device other = device::cuda;
  std::thread t([&] { other = current_device(); });
  t.join();
  CHECK(other == device::cpu);
}
