// The checkpoint commit protocol (storage/checkpoint_commit.hpp) without actors: one process
// writing several rank files, two "processes" (threads sharing a key-value store) committing one
// step, crashes before the rename and before a follower publishes, and several slices per file.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>

#include "runtime/dist/comm.hpp"
#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/checkpoint_commit.hpp"
#include "storage/fs_util.hpp"
#include "storage/layout_fixture.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

zf::param_layout small_layout() {
  return zf::testing::shape_layout(2, 24, 2, 50, 12);
}

struct state {  // values that identify the step
  std::vector<float> p, m, v;
  state(std::size_t n, int step) : p(n), m(n), v(n) {
    for (std::size_t i = 0; i < n; ++i) {
      p[i] = float(step) + 0.001f * float(i);
      m[i] = -float(step) - 0.5f * float(i);
      v[i] = float(step) * 1e-3f + float(i);
    }
  }
};

// Writer `w` of `n` owns every n-th piece of the layout cut into 2n pieces: two slices per file,
// as a ZeRO rank owns one chunk of every region.
st::checkpoint_part part(const state& s, int w, int n) {
  const std::size_t total = s.p.size(), piece = (total + 2 * n - 1) / (2 * n);
  st::checkpoint_part out;
  out.file_id = w;
  for (int k : {w, w + n}) {
    const std::size_t b = std::min(total, k * piece), e = std::min(total, b + piece);
    out.slices.push_back({b, e, s.p.data() + b, s.m.data() + b, s.v.data() + b});
  }
  return out;
}

st::manifest_info info(int step, int world) {
  return {step, world, 3, "", {{"step", step}}};
}

void check_loads(const fs::path& root, const zf::param_layout& L, int step) {
  const state want(L.total, step);
  auto got = st::load_checkpoint(root, L);
  CHECK(got.step == step);
  CHECK(std::memcmp(got.params.data(), want.p.data(), L.total * 4) == 0);
  CHECK(std::memcmp(got.exp_avg.data(), want.m.data(), L.total * 4) == 0);
  CHECK(std::memcmp(got.exp_avg_sq.data(), want.v.data(), L.total * 4) == 0);
  auto rep = st::verify_checkpoint(root);
  INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
  CHECK(rep.ok);
}

// Two committers (ranks 0 and 1 of a group) writing one step at once on two threads; returns
// what each returned, rethrowing nothing (errors come back as messages).
struct group_run {
  fs::path lead;
  std::string errors[2];
};
group_run commit_in_two(const fs::path& root, const zf::param_layout& L, const state& s, int step,
                        const std::shared_ptr<zf::comm::kv_store>& store,
                        std::function<void(int, std::string_view)> hook = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  group_run out;
  std::vector<std::thread> th;
  for (int r = 0; r < 2; ++r)
    th.emplace_back([&, r] {
      st::checkpoint_committer c(root, L, 2, {store, r, 2, timeout});
      if (hook) c.on_phase = [&, r](std::string_view p) { hook(r, p); };
      try {
        auto d = c.write(info(step, 2), {part(s, r, 2)});
        if (r == 0) out.lead = d;
        if (r == 1) CHECK(d.empty());  // only the leader knows the committed folder
      } catch (const std::exception& e) {
        out.errors[r] = e.what();
      }
    });
  for (auto& t : th) t.join();
  return out;
}

struct simulated_crash : std::runtime_error {
  simulated_crash() : std::runtime_error("simulated crash") {}
};

}  // namespace

TEST_CASE("checkpoint commit: one process writes a file per part, two slices each") {
  temp_dir d("commit1");
  const auto L = small_layout();
  const state s(L.total, 5);
  st::checkpoint_committer c(d.path, L, 3);
  const auto dir = c.write(info(5, 3), {part(s, 0, 3), part(s, 1, 3), part(s, 2, 3)});
  CHECK(dir == d.path / "step-000005");
  CHECK(st::read_text_file(d.path / "latest") == "step-000005\n");
  check_loads(d.path, L, 5);
  auto m = st::read_checkpoint_manifest(d.path);
  CHECK(m.files.size() == 3);
  CHECK(m.world == 3);
  for (auto& t : m.tensors)
    for (auto& f : t.fragments) CHECK(f.dtype == zf::dtype::f32);
}

TEST_CASE("checkpoint commit: several slices in one file, each section 4 KiB aligned") {
  temp_dir d("slices");
  const auto L = small_layout();
  const state s(L.total, 1);
  const fs::path tmp = st::begin_checkpoint(d.path, 1);
  const auto p = part(s, 0, 2);
  auto frags = st::write_shard(tmp, 0, L, p.slices);
  // sections: params of slice 0, of slice 1, then exp_avg and exp_avg_sq likewise
  std::vector<uint64_t> starts;
  uint64_t at = 0;
  for (int k = 0; k < 3; ++k)
    for (auto& sl : p.slices) {
      starts.push_back(at);
      at += ((sl.end - sl.begin) * 4 + 4095) & ~uint64_t(4095);
    }
  for (auto b : starts) {
    bool found = false;
    for (auto& f : frags) found = found || f.offset == b;
    CHECK(found);
  }
  for (std::size_t i = 1; i < frags.size(); ++i) CHECK(frags[i - 1].offset < frags[i].offset);
  // every element of both slices, in each kind, exactly once
  for (int k = 0; k < 3; ++k) {
    std::size_t n = 0;
    for (auto& f : frags) n += f.kind == k ? f.length / 4 : 0;
    CHECK(n == (p.slices[0].end - p.slices[0].begin) + (p.slices[1].end - p.slices[1].begin));
  }
  // slices that disagree on the moments are refused
  auto bad = p.slices;
  bad[1].exp_avg = nullptr;
  CHECK(contains(error_of([&] { st::write_shard(tmp, 1, L, bad); }), "exp_avg"));
}

TEST_CASE("checkpoint commit: two processes over a shared key-value store commit one step") {
  temp_dir d("commit2");
  const auto L = small_layout();
  auto store = zf::comm::make_file_store(d.path / "kv");
  const fs::path root = d.path / "ckpt";
  for (int step : {1, 2, 3}) {
    CAPTURE(step);
    const state s(L.total, step);
    auto r = commit_in_two(root, L, s, step, store);
    CHECK(r.errors[0].empty());
    CHECK(r.errors[1].empty());
    CHECK(r.lead == root / fmt::format("step-{:06d}", step));
    check_loads(root, L, step);
    auto m = st::read_checkpoint_manifest(root);
    CHECK(m.world == 2);
    REQUIRE(m.files.size() == 2);  // each process's own file
    CHECK(m.files[0].first == "rank-00000.bin");
    CHECK(m.files[1].first == "rank-00001.bin");
  }
  CHECK_FALSE(fs::exists(root / "step-000001"));  // keep = 2
}

TEST_CASE("checkpoint commit: a crash before the rename leaves the previous checkpoint intact") {
  temp_dir d("commitcrash");
  const auto L = small_layout();
  const fs::path root = d.path / "ckpt";
  REQUIRE(commit_in_two(root, L, state(L.total, 1), 1, zf::comm::make_file_store(d.path / "kv1"))
              .errors[0]
              .empty());
  // the leader dies with step 2's manifest durable, just before the rename
  auto crash_at = [](std::string_view phase) {
    return [phase](int r, std::string_view p) {
      if (r == 0 && p == phase) throw simulated_crash();
    };
  };
  auto r = commit_in_two(root, L, state(L.total, 2), 2, zf::comm::make_file_store(d.path / "kv2"),
                         crash_at("manifest"));
  CHECK(r.errors[0] == "simulated crash");
  CHECK(r.errors[1].empty());  // the follower had published and left
  CHECK(fs::exists(root / "step-000002.tmp" / "manifest"));
  CHECK_FALSE(fs::exists(root / "step-000002"));
  CHECK(st::read_text_file(root / "latest") == "step-000001\n");
  check_loads(root, L, 1);
  // a follower that dies before publishing: the leader gives up (naming what it waited for)
  // without committing, and step 1 is still what latest names
  auto r2 = commit_in_two(
      root, L, state(L.total, 2), 2, zf::comm::make_file_store(d.path / "kv3"),
      [](int rank, std::string_view p) {
        if (rank == 1 && p == "written") throw simulated_crash();
      },
      std::chrono::milliseconds(300));
  CHECK(contains(r2.errors[0], "frag/1"));
  CHECK(r2.errors[1] == "simulated crash");
  CHECK(st::read_text_file(root / "latest") == "step-000001\n");
  check_loads(root, L, 1);
  // a follower that fails with an error (a full disk) tells the leader at once: the leader fails
  // naming it and its reason instead of waiting out the group timeout
  const auto t0 = std::chrono::steady_clock::now();
  auto r4 = commit_in_two(
      root, L, state(L.total, 2), 2, zf::comm::make_file_store(d.path / "kv5"),
      [](int rank, std::string_view p) {
        if (rank == 1 && p == "written") zf::fail("rank-00001.bin: No space left on device");
      },
      std::chrono::seconds(60));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30));
  CHECK(contains(r4.errors[0], "writer 1 could not write its part"));
  CHECK(contains(r4.errors[0], "No space left on device"));
  CHECK_FALSE(fs::exists(root / "step-000002.tmp"));
  CHECK(st::read_text_file(root / "latest") == "step-000001\n");
  check_loads(root, L, 1);
  // the next launch writes step 2 over the leftovers
  auto r3 = commit_in_two(root, L, state(L.total, 2), 2, zf::comm::make_file_store(d.path / "kv4"));
  CHECK(r3.errors[0].empty());
  check_loads(root, L, 2);
}

TEST_CASE("checkpoint commit: fragment lists cross the store with their dtype") {
  std::vector<st::fragment> fs{
      {"wte.weight", st::kind_exp_avg, "rank-00001.bin", 4096, 400, 7, 0xdeadbeef, zf::dtype::f32},
      {"ln_f.bias", st::kind_param, "rank-00001.bin", 0, 48, 0, 1, zf::dtype::bf16}};
  auto back = st::decode_fragments(st::encode_fragments(fs));
  REQUIRE(back.size() == 2);
  CHECK(back[0].tensor == "wte.weight");
  CHECK(back[0].kind == st::kind_exp_avg);
  CHECK(back[0].offset == 4096);
  CHECK(back[0].crc32 == 0xdeadbeef);
  CHECK(back[1].dtype == zf::dtype::bf16);
  std::string junk = "[[1,2]]";
  CHECK(contains(error_of([&] { st::decode_fragments({junk.begin(), junk.end()}); }), "malformed"));
}
