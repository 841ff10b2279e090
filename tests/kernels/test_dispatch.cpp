// The dispatch point (kernels/dispatch.hpp) and the cuda twins against their cpu kernels. The
// twin checks need a ZF_CUDA build and a GPU; anywhere else they are skipped with a MESSAGE that
// says why (visible in the test output), never silently.
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "kernels/adamw.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/matmul.hpp"
#include "shapes.hpp"
#if defined(ZF_CUDA)
#include <cuda_runtime.h>
#endif

using namespace zf::kernels;
namespace sh = zf::test::shapes;

namespace {

// The message of the kernel_error f throws ("" when it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kernel_error& e) {
    return e.what();
  }
  return {};
}

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
  if (cuda_built() && cuda_device_count() > 0) {
    MESSAGE("SKIPPED the refusal check: this process has a GPU, so device cuda is allowed");
    return;
  }
  const std::string m = error_of([] { set_current_device(device::cuda); });
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

TEST_CASE("dispatch: on cuda, families without a twin refuse, the device is per thread") {
  if (!gpu_or_skip("the cuda dispatch check")) return;
  device_scope s(device::cuda);
  CHECK(current_device() == device::cuda);
  float a = 1.0f, b = 2.0f, c = 0.0f;
  const std::string m =
      error_of([&] { gemm(false, false, 1, 1, 1, 1.0f, &a, 0, &b, 0, 0.0f, &c, 0); });
  CHECK(contains(m, "gemm has no cuda kernel"));
  device other = device::cuda;
  std::thread t([&] { other = current_device(); });
  t.join();
  CHECK(other == device::cpu);
}

#if defined(ZF_CUDA)
namespace {

// A GPU copy of a host vector, freed at scope exit.
struct gpu_floats {
  float* p = nullptr;
  std::size_t n = 0;
  explicit gpu_floats(const std::vector<float>& h) : n(h.size()) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float) + 4) == cudaSuccess);
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~gpu_floats() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};

std::vector<double> widen(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

}  // namespace
#endif

TEST_CASE("cuda twin: adamw_step and sum_squares equal the cpu kernels") {
  if (!gpu_or_skip("the adamw cuda twin check")) return;
#if defined(ZF_CUDA)
  // The check rows plus one large, odd size that spans many blocks of the grid-stride loops.
  std::vector<long> sizes;
  for (const auto& s : sh::elem_cases) {
    if (s.use & sh::check) sizes.push_back(s.n);
  }
  sizes.push_back((1L << 22) + 3);
  const zf::test::tol twin{1e-6, 1e-7};  // a few ulp: FMA contraction may differ
  for (long sz : sizes) {
    const std::size_t n = static_cast<std::size_t>(sz);
    CAPTURE(n);
    for (int step : {1, 3}) {
      CAPTURE(step);
      auto p = zf::test::randn(n, 1), g = zf::test::randn(n, 2, 0.1f);
      auto m = zf::test::randn(n, 3, 0.01f), v = zf::test::randn(n, 4, 1e-3f);
      for (auto& x : v) x = std::abs(x);
      adamw_params a;
      a.lr = 1e-2f;
      a.weight_decay = 0.1f;
      a.step = step;
      a.grad_scale = 0.5f;
      gpu_floats dp(p), dg(g), dm(m), dv(v);
      adamw_step(p.data(), g.data(), m.data(), v.data(), n, a);  // cpu (this thread's default)
      {
        device_scope on_gpu(device::cuda);
        adamw_step(dp.p, dg.p, dm.p, dv.p, n, a);  // the same public call, dispatched to cuda
      }
      CHECK(zf::test::near(dp.host(), widen(p), twin));
      CHECK(zf::test::near(dm.host(), widen(m), twin));
      CHECK(zf::test::near(dv.host(), widen(v), twin));
    }
    const auto x = zf::test::randn(n, 5);
    gpu_floats dx(x);
    const double cpu_sum = sum_squares(x.data(), n);
    device_scope on_gpu(device::cuda);
    const double gpu_sum = sum_squares(dx.p, n);
    CHECK(gpu_sum == doctest::Approx(cpu_sum).epsilon(1e-12));
    CHECK(sum_squares(dx.p, n) == gpu_sum);  // deterministic: same bits on a second call
  }
#endif
}
