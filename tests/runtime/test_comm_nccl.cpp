// The NCCL backend (runtime/dist/comm_nccl.cpp). Everywhere: its host-side planning
// (runtime/dist/nccl_plan.hpp) — the unique-id exchange through a file store between two threads,
// all_to_all's offsets and checks, argument checks, the bounded wait, the timeout texts — and
// make_nccl's refusal without CUDA or without a GPU. The cases that need a GPU are in
// test_comm_nccl_gpu.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/dispatch.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/dist/nccl_plan.hpp"
#include "test_util.hpp"

namespace {

using namespace zf::comm;
namespace plan = zf::comm::nccl_plan;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

nccl_options quick_options() {
  nccl_options o;
  o.rendezvous_timeout = std::chrono::seconds(10);
  o.op_timeout = std::chrono::seconds(20);
  o.timeout_key = "train.comm_timeout_s";
  return o;
}

// unique_id_bytes of a recognizable pattern: the id when there is no NCCL to make one.
std::vector<char> fake_id() {
  std::vector<char> id(plan::unique_id_bytes);
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<char>(i * 7 + 3);
  return id;
}

}  // namespace

TEST_CASE("comm nccl: rank 0 publishes the unique id and rank 1 reads the same bytes") {
  // The real ncclGetUniqueId where NCCL is linked in (it needs no GPU), fake bytes otherwise.
  const bool real = zf::kernels::cuda_built();
  if (real) {
    const auto a = plan::new_unique_id();
    CHECK(a.size() == plan::unique_id_bytes);
    CHECK(a != plan::new_unique_id());  // every call a new group
  } else {
    CHECK(contains(error_of([] { plan::new_unique_id(); }), "built without CUDA"));
  }
  const auto make_id = real ? std::function<std::vector<char>()>(&plan::new_unique_id)
                            : std::function<std::vector<char>()>(&fake_id);
  temp_dir dir("nccl_id");
  const auto store = make_file_store(dir.path);  // one store object: see comm_groups.hpp
  std::vector<char> read;
  std::string error;
  std::thread reader([&] {  // rank 1 starts first and waits for the key
    try {
      read = plan::exchange_unique_id(*store, 1, 2, "job7", make_id, milliseconds(10'000));
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(milliseconds(50));
  const auto published = plan::exchange_unique_id(*store, 0, 2, "job7", make_id, milliseconds(10));
  reader.join();
  CHECK(error.empty());
  CHECK(published.size() == plan::unique_id_bytes);
  CHECK(read == published);
  CHECK(store->get("job7/nccl_id", milliseconds(10)) == published);
  CHECK(plan::unique_id_key("job7") == "job7/nccl_id");
  if (!real) CHECK(published == fake_id());
}

TEST_CASE("comm nccl: a rank waiting for the unique id gives up naming the key and rank 0") {
  temp_dir dir("nccl_id_missing");
  const auto store = make_file_store(dir.path);
  const auto t0 = clock_type::now();
  const std::string what =
      error_of([&] { plan::exchange_unique_id(*store, 2, 3, "grp", &fake_id, milliseconds(200)); });
  const auto took = clock_type::now() - t0;
  CAPTURE(what);
  CHECK(contains(what,
                 "comm nccl: rank 2 of 3 gave up after 200 ms waiting for rank 0's NCCL "
                 "unique id (store key 'grp/nccl_id')"));
  CHECK(took >= milliseconds(190));
  CHECK(took < milliseconds(5'000));

  // A value of the wrong size under the key (another program's), and a bad id from rank 0.
  store->set("odd/nccl_id", std::vector<char>(5, 'x'));
  CHECK(contains(
      error_of([&] { plan::exchange_unique_id(*store, 1, 2, "odd", &fake_id, milliseconds(50)); }),
      "comm nccl: rank 1 of 2: store key 'odd/nccl_id' holds 5 bytes, expected a 128-byte NCCL "
      "unique id"));
  const auto short_id = [] { return std::vector<char>(16); };
  CHECK(contains(
      error_of([&] { plan::exchange_unique_id(*store, 0, 2, "bad", short_id, milliseconds(50)); }),
      "the NCCL unique id has 16 bytes, expected 128"));
}

TEST_CASE("comm nccl: argument checks name rank, world and the bad value") {
  temp_dir dir("nccl_args");
  const auto store = make_file_store(dir.path);
  const nccl_options ok = quick_options();
  CHECK_NOTHROW(plan::check_args(0, 1, store.get(), ok));
  CHECK_NOTHROW(plan::check_args(3, 4, store.get(), ok));
  CHECK(contains(error_of([&] { plan::check_args(0, 0, store.get(), ok); }),
                 "comm nccl: world must be >= 1, got 0"));
  CHECK(contains(error_of([&] { plan::check_args(2, 2, store.get(), ok); }),
                 "comm nccl: rank 2 out of range for world 2 (expected 0..1)"));
  CHECK(contains(error_of([&] { plan::check_args(-1, 2, store.get(), ok); }),
                 "rank -1 out of range"));
  CHECK(contains(error_of([&] { plan::check_args(1, 2, nullptr, ok); }),
                 "comm nccl: rank 1 of 2: no rendezvous store given"));
  nccl_options zero = ok;
  zero.op_timeout = milliseconds(0);
  CHECK(contains(error_of([&] { plan::check_args(0, 2, store.get(), zero); }),
                 "timeouts must be positive, got rendezvous 10000 ms, op 0 ms"));
  // make_nccl checks its arguments first in a CUDA build, and refuses at once without CUDA.
  const std::string bad = error_of([&] { make_nccl(2, 2, store, "p", ok); });
  CHECK(contains(
      bad, zf::kernels::cuda_built() ? "rank 2 out of range for world 2" : "built without CUDA"));
}

TEST_CASE("comm nccl: make_nccl refuses clearly without CUDA or without a GPU") {
  if (zf::kernels::cuda_built() && zf::kernels::cuda_device_count() > 0) {
    MESSAGE("SKIPPED the refusal check: this process has a GPU");
    return;
  }
  temp_dir dir("nccl_refuse");
  const auto store = make_file_store(dir.path);
  const std::string what = error_of([&] { make_nccl(0, 1, store, "p", quick_options()); });
  CAPTURE(what);
  if (zf::kernels::cuda_built()) {
    CHECK(contains(what, "comm nccl: rank 0 of 1: no CUDA device visible to this process"));
    CHECK(contains(what, "one GPU per rank"));
  } else {
    CHECK(contains(what, "zeroflow was built without CUDA"));
    CHECK(contains(what, "-DZF_CUDA=ON"));
  }
  // Nothing was published: a rank without a GPU fails before the rendezvous.
  CHECK_THROWS_AS(store->get("p/nccl_id", milliseconds(1)), zf::error);
}

TEST_CASE(
    "comm nccl: all_to_all planning gives each rank's offsets and refuses what one rank sees") {
  plan::all_to_all_plan p;
  const std::vector<std::size_t> send = {2, 0, 3}, recv = {1, 0, 4};
  std::vector<float> in(5), out(5);
  plan::plan_all_to_all("nccl", 1, 3, send, recv, in.data(), out.data(), p);
  CHECK(p.n_in == 5);
  CHECK(p.n_out == 5);
  CHECK(p.send_off == std::vector<std::size_t>{0, 2, 2});
  CHECK(p.recv_off == std::vector<std::size_t>{0, 1, 1});
  // The plan is reused: a smaller world shrinks it, all-zero counts allow null buffers.
  const std::vector<std::size_t> zeros = {0, 0};
  plan::plan_all_to_all("nccl", 0, 2, zeros, zeros, nullptr, nullptr, p);
  CHECK(p.n_in == 0);
  CHECK(p.n_out == 0);
  CHECK(p.send_off == std::vector<std::size_t>{0, 0});

  const auto err = [&](int rank, int world, std::vector<std::size_t> s, std::vector<std::size_t> r,
                       const float* i, const float* o) {
    return error_of([&] { plan::plan_all_to_all("nccl", rank, world, s, r, i, o, p); });
  };
  CHECK(contains(err(0, 3, {1, 1}, {1, 1, 1}, in.data(), out.data()),
                 "comm nccl (rank 0 of 3): all_to_all with 2 send and 3 recv counts, expected 3 "
                 "each (one per rank)"));
  CHECK(contains(err(1, 2, {1, 2}, {1, 3}, in.data(), out.data()),
                 "comm nccl (rank 1 of 2): all_to_all sends 2 floats to itself but expects 3 "
                 "from itself"));
  CHECK(contains(err(0, 2, {1, 1}, {1, 1}, nullptr, out.data()), "with a null buffer"));
  CHECK(contains(err(0, 2, {1, 1}, {1, 1}, in.data(), nullptr), "with a null buffer"));
  CHECK(contains(err(0, 2, {2, 2}, {2, 2}, in.data(), in.data() + 3),
                 "all_to_all with overlapping in and out buffers"));
  // Back to back is not overlapping; a null `in` is fine when nothing is sent.
  std::vector<float> both(8);
  CHECK_NOTHROW(plan::plan_all_to_all("nccl", 0, 2, std::vector<std::size_t>{2, 2},
                                      std::vector<std::size_t>{2, 2}, both.data(), both.data() + 4,
                                      p));
  CHECK_NOTHROW(plan::plan_all_to_all("nccl", 1, 2, std::vector<std::size_t>{0, 0},
                                      std::vector<std::size_t>{3, 0}, nullptr, out.data(), p));
  CHECK(p.recv_off == std::vector<std::size_t>{0, 3});
}

TEST_CASE("comm nccl: the bounded wait stops at done, at its limit, or at a failure") {
  int calls = 0;
  CHECK(plan::poll_until([&] { return ++calls == 3; }, milliseconds(1'000)));
  CHECK(calls == 3);
  calls = 0;
  const auto never = [&] {
    ++calls;
    return false;
  };
  CHECK_FALSE(plan::poll_until(never, milliseconds(0)));
  CHECK(calls >= 1);  // polled once even with no time at all
  const auto t0 = clock_type::now();
  calls = 0;
  CHECK_FALSE(plan::poll_until(never, milliseconds(100)));
  const auto took = clock_type::now() - t0;
  CHECK(took >= milliseconds(100));
  CHECK(took < milliseconds(1'000));
  CHECK(calls < 10'000);  // it sleeps between polls rather than spinning for the whole wait
  CHECK_THROWS_AS(
      plan::poll_until([]() -> bool { throw std::runtime_error("x"); }, milliseconds(10)),
      std::runtime_error);
  // A completion that comes late is seen promptly.
  std::atomic<bool> flag{false};
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(30));
    flag = true;
  });
  const auto t1 = clock_type::now();
  CHECK(plan::poll_until([&] { return flag.load(); }, milliseconds(5'000)));
  CHECK(clock_type::now() - t1 < milliseconds(1'000));
  setter.join();
}

TEST_CASE("comm nccl: timeout messages name rank, world, op, limit and the key") {
  CHECK(plan::duration_text(milliseconds(60'000)) == "60 s");
  CHECK(plan::duration_text(milliseconds(1'500)) == "1500 ms");
  CHECK(plan::timeout_message(1, 4, "all_reduce", milliseconds(2'000), "train.comm_timeout_s") ==
        "comm nccl: rank 1 of 4: all_reduce did not complete within 2 s (a peer died or stopped; "
        "limit set by train.comm_timeout_s); the communicator was aborted");
  CHECK(plan::timeout_message(0, 2, "barrier", milliseconds(500), "") ==
        "comm nccl: rank 0 of 2: barrier did not complete within 500 ms (a peer died or "
        "stopped); the communicator was aborted");
  CHECK(plan::init_timeout_message(0, 2, milliseconds(1'000), "run3") ==
        "comm nccl: rank 0 of 2: NCCL init did not complete within 1 s (did every rank start, "
        "each on its own GPU, with the same world and prefix 'run3'?); the communicator was "
        "aborted");
}
