// The NCCL backend on a GPU (one is enough: NCCL refuses two ranks on one GPU, so the group is
// world 1, which still goes through NCCL's init, enqueue and completion for every collective):
// results, in-place forms, bytes counted, the buffer checks, bf16's refusal, and an init whose
// second rank never joins failing within the rendezvous limit. Each case prints one SKIPPED
// message where no GPU is visible (and in a build without CUDA).
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/device.hpp"
#include "kernels/dispatch.hpp"
#include "runtime/dist/comm.hpp"
#include "test_util.hpp"

namespace {

using namespace zf::comm;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

// "" when the GPU cases can run, else why not (every reason says "no CUDA device").
std::string no_gpu_reason() {
  if (!zf::kernels::cuda_built()) return "no CUDA device (built without CUDA)";
  if (zf::kernels::cuda_device_count() == 0) return "no CUDA device visible to this process";
  return {};
}

nccl_options gpu_options() {
  nccl_options o;
  o.rendezvous_timeout = std::chrono::seconds(30);
  o.op_timeout = std::chrono::seconds(30);
  o.timeout_key = "train.comm_timeout_s";
  return o;
}

// T[n] of GPU memory; up and down copy through the legacy stream and wait for it, so that the
// communicator's own stream (which does not order against it) sees finished data.
template <class T>
struct device_array {
  T* p = nullptr;
  std::size_t n = 0;
  explicit device_array(std::size_t count)
      : p(static_cast<T*>(zf::kernels::gpu_alloc(count * sizeof(T)))), n(count) {}
  ~device_array() { zf::kernels::gpu_free(p); }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  void up(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    zf::kernels::gpu_copy(p, h.data(), n * sizeof(T));
    zf::kernels::gpu_synchronize();
  }
  std::vector<T> down() const {
    std::vector<T> h(n);
    zf::kernels::gpu_copy(h.data(), p, n * sizeof(T));
    zf::kernels::gpu_synchronize();
    return h;
  }
};

std::vector<float> ramp(std::size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

}  // namespace

TEST_CASE("comm nccl: a world-1 group runs every collective on the GPU") {
  if (const std::string why = no_gpu_reason(); !why.empty()) {
    MESSAGE("SKIPPED the nccl world-1 collectives on a GPU: " << why);
    return;
  }
  zf::kernels::gpu_init(0);
  temp_dir dir("nccl_w1");
  auto c = make_nccl(0, 1, make_file_store(dir.path), "w1", gpu_options());
  CHECK(c->backend() == "nccl");
  CHECK(c->rank() == 0);
  CHECK(c->world() == 1);
  const std::size_t n = 1000;
  const auto x = ramp(n, 1.0f);

  device_array<float> a(n), b(n);
  a.up(x);
  c->all_reduce(a.p, n);  // the sum over one rank is the data
  CHECK(a.down() == x);
  device_array<double> d(3);
  d.up({0.5, -2.0, 1e300});
  c->all_reduce(d.p, 3);
  CHECK(d.down() == std::vector<double>{0.5, -2.0, 1e300});

  c->reduce_scatter(a.p, b.p, n);  // in [1*n] -> out [n]
  CHECK(b.down() == x);
  b.up(ramp(n, 7.0f));
  c->reduce_scatter(b.p, b.p, n);  // in place: out == in + rank*chunk
  CHECK(b.down() == ramp(n, 7.0f));
  b.up(std::vector<float>(n, 0.0f));
  c->all_gather(a.p, b.p, n);  // in [n] -> out [1*n]
  CHECK(b.down() == x);
  c->all_gather(b.p, b.p, n);  // in place: in == out + rank*chunk
  CHECK(b.down() == x);
  c->broadcast(a.p, n, 0);
  CHECK(a.down() == x);

  const std::vector<std::size_t> counts = {n};
  b.up(std::vector<float>(n, 0.0f));
  c->all_to_all(a.p, counts, b.p, counts);  // the own piece, copied on the GPU
  CHECK(b.down() == x);
  const std::vector<std::size_t> none = {0};
  c->all_to_all(nullptr, none, nullptr, none);
  c->barrier();
  // Zero counts are fine with null buffers.
  c->all_reduce(static_cast<float*>(nullptr), 0);
  c->all_gather(nullptr, nullptr, 0);
  CHECK(c->bytes_sent() == 0);  // world 1 sends nothing

  // What NCCL cannot be given: checked before anything is enqueued, the group stays usable.
  std::vector<float> host(n, 1.0f);
  const std::string h = error_of([&] { c->all_reduce(host.data(), n); });
  CHECK(contains(h, "comm nccl (rank 0 of 1): all_reduce's data buffer"));
  CHECK(contains(h, "is host memory; the nccl backend takes GPU memory"));
  CHECK(contains(error_of([&] { c->reduce_scatter(a.p, nullptr, n); }), "with a null out buffer"));
  CHECK(contains(error_of([&] { c->broadcast(a.p, n, 1); }),
                 "broadcast root 1 out of range, expected 0..0"));
  CHECK(contains(error_of([&] { c->all_to_all(a.p, counts, a.p, counts); }),
                 "overlapping in and out buffers"));
  CHECK(error_of([&] { c->all_reduce_bf16(a.p, n); }) ==
        "comm nccl: bf16 gradient reduction is not supported yet (train.reduce_dtype = fp32)");
  CHECK(contains(error_of([&] { c->reduce_scatter_bf16(a.p, b.p, n); }),
                 "bf16 gradient reduction is not supported yet"));
  c->all_reduce(a.p, n);
  CHECK(a.down() == x);

  // A large message (NCCL's chunked path) and a communicator used from a second thread.
  const std::size_t big = std::size_t{1} << 22;
  device_array<float> g(big);
  g.up(ramp(big, -3.0f));
  std::string thread_error;
  std::thread([&] {
    try {
      c->all_reduce(g.p, big);
    } catch (const std::exception& e) {
      thread_error = e.what();
    }
  }).join();
  CHECK(thread_error.empty());
  CHECK(g.down() == ramp(big, -3.0f));
}

TEST_CASE("comm nccl: an init whose second rank never joins fails within the rendezvous limit") {
  if (const std::string why = no_gpu_reason(); !why.empty()) {
    MESSAGE("SKIPPED the nccl init timeout on a GPU: " << why);
    return;
  }
  zf::kernels::gpu_init(0);
  temp_dir dir("nccl_lonely");
  nccl_options o = gpu_options();
  o.rendezvous_timeout = std::chrono::seconds(2);
  const auto t0 = clock_type::now();
  const std::string what =
      error_of([&] { make_nccl(0, 2, make_file_store(dir.path), "lonely", o); });
  const auto took = clock_type::now() - t0;
  CAPTURE(what);
  CHECK(contains(what, "comm nccl: rank 0 of 2: NCCL init did not complete within 2 s"));
  CHECK(contains(what, "prefix 'lonely'"));
  CHECK(took >= milliseconds(1'900));
  CHECK(took < std::chrono::seconds(20));  // the abort itself is bounded too
}
