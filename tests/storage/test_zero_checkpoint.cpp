// ZeRO ranks <-> checkpoints by slices (storage/zero_checkpoint.hpp): each rank snapshots and
// writes only its own slices, any world size and stage loads any checkpoint bit for bit, and a
// rank's load reads only the ranges it holds, measured (bytes read, bytes staged) rather than
// assumed.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "runtime/dist/comm.hpp"
#include "runtime/train/zero.hpp"
#include "storage/checkpoint.hpp"
#include "storage/zero_checkpoint.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::temp_dir;

namespace {

zf::model_config small_model() {
  zf::model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.n_positions = 16;
  m.vocab_size = 97;  // odd: padded partition tails
  return m;
}

struct flat_state {
  std::vector<float> p, m, v;
};

// Arbitrary bit patterns (NaNs, -0, subnormals): equality below is bitwise.
flat_state random_state(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  flat_state s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (auto* b : {&s.p, &s.m, &s.v})
    for (auto& x : *b) {
      const uint32_t bits = rng();
      std::memcpy(&x, &bits, 4);
    }
  return s;
}

struct world {
  std::vector<std::unique_ptr<zf::comm::communicator>> comms;
  std::vector<std::shared_ptr<zf::zero_rank>> ranks;
  world(int n, int stage) : comms(zf::comm::make_local_group(n)) {
    for (auto& c : comms)
      ranks.push_back(std::make_shared<zf::zero_rank>(zf::spec_of(small_model()),
                                                      zf::optimizer_config{}, stage, *c));
  }
  flat_state assembled() const {  // every rank's persisted slices, put together
    const std::size_t n = zf::layout_of(small_model()).total;
    flat_state s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
    for (auto& z : ranks) z->export_state(s.p.data(), s.m.data(), s.v.data());
    return s;
  }
};

std::size_t owned(const zf::zero_rank& z) {
  std::size_t n = 0;
  for (auto& sl : z.persisted()) n += sl.len;
  return n;
}

bool same(const flat_state& a, const flat_state& b) {
  const std::size_t n = a.p.size() * 4;
  return std::memcmp(a.p.data(), b.p.data(), n) == 0 &&
         std::memcmp(a.m.data(), b.m.data(), n) == 0 && std::memcmp(a.v.data(), b.v.data(), n) == 0;
}

// Ranks of `w` snapshot their slices; one process commits them (a file per rank).
fs::path write_snapshots(const fs::path& root, const world& w, int step) {
  const auto L = zf::layout_of(small_model());
  std::vector<zf::zero_snapshot> snaps;
  for (auto& z : w.ranks) snaps.push_back(z->snapshot());
  std::vector<st::checkpoint_part> parts;
  for (auto& s : snaps) parts.push_back(st::part_of(s));
  st::checkpoint_committer c(root, L, 3);
  return c.write({step, int(w.ranks.size()), w.ranks[0]->stage(), "", {{"step", step}}}, parts);
}

}  // namespace

TEST_CASE("zero checkpoint: each rank writes its slices, any world and stage loads them") {
  const auto L = zf::layout_of(small_model());
  const flat_state want = random_state(L.total, 5);
  int i = 0;
  for (auto [w1, s1] : {std::pair{1, 0}, {2, 3}, {3, 1}, {4, 0}}) {
    CAPTURE(w1);
    CAPTURE(s1);
    temp_dir d("zckpt");
    world a(w1, s1);
    for (auto& z : a.ranks) z->import_state(want.p.data(), want.m.data(), want.v.data());
    REQUIRE(same(a.assembled(), want));
    std::size_t snapshot_floats = 0;
    for (auto& z : a.ranks) {
      auto s = z->snapshot();
      CHECK(s.params.size() == owned(*z));  // the rank's share, never the full state
      snapshot_floats += s.params.size();
    }
    CHECK(snapshot_floats == L.total);
    write_snapshots(d.path, a, ++i);
    CHECK(st::read_checkpoint_manifest(d.path).files.size() == std::size_t(w1));
    for (auto [w2, s2] : {std::pair{1, 0}, {2, 3}, {4, 1}, {3, 2}, {4, 3}}) {
      CAPTURE(w2);
      CAPTURE(s2);
      world b(w2, s2);
      st::load_ranks(b.ranks, d.path, L);
      CHECK(same(b.assembled(), want));
    }
  }
}

TEST_CASE("zero checkpoint: a rank reads only what it holds, staging at most one fragment") {
  const auto L = zf::layout_of(small_model());
  const flat_state want = random_state(L.total, 9);
  std::size_t largest = 0;
  for (auto& p : L.params) largest = std::max(largest, p.numel);
  temp_dir d("zload");
  {
    world a(4, 3);
    for (auto& z : a.ranks) z->import_state(want.p.data(), want.m.data(), want.v.data());
    write_snapshots(d.path / "four", a, 1);
    world one(1, 0);
    one.ranks[0]->import_state(want.p.data(), want.m.data(), want.v.data());
    write_snapshots(d.path / "one", one, 1);
  }
  const auto four = st::read_checkpoint_manifest(d.path / "four");
  const auto one = st::read_checkpoint_manifest(d.path / "one");
  const uint64_t full = 12 * uint64_t(L.total);  // params + 2 moments, bytes

  // Same partition as the writers: every fragment is exactly a range a rank holds, read in
  // place. Stage 3 reads 1/N of the checkpoint; stages 1-2 the full parameters + 1/N of the
  // moments; stage 0 everything (it holds everything).
  for (int stage : {3, 2, 1, 0}) {
    CAPTURE(stage);
    world b(4, stage);
    uint64_t sum = 0;
    for (auto& z : b.ranks) {
      const auto s = st::load_rank_state(*z, four, L);
      const uint64_t mine = 4 * uint64_t(owned(*z));
      const uint64_t expect = stage == 3 ? 3 * mine : stage == 0 ? full : 4 * L.total + 2 * mine;
      CHECK(s.bytes_read == expect);
      CHECK(s.bytes_staged == 0);
      CHECK(s.peak_staged == 0);
      sum += s.bytes_read;
    }
    if (stage == 3) CHECK(sum == full);  // the ranks together read the checkpoint once
    CHECK(same(b.assembled(), want));
  }
  // A checkpoint written by one rank has whole-tensor fragments: a stage-3 rank must read (and
  // CRC-check) every fragment overlapping its chunks, but stages only one at a time, where an
  // all-or-nothing read of the same ranges holds them all at once.
  world c(4, 3);
  for (auto& z : c.ranks) {
    const auto s = st::load_rank_state(*z, one, L);
    CHECK(s.bytes_read < full);
    CHECK(s.peak_staged <= 4 * largest);
    st::load_stats atomic;
    std::vector<float> p(L.total), m(L.total), v(L.total);
    for (auto& sl : z->persisted())
      st::load_range(one, L, sl.flat_begin, sl.flat_begin + sl.len, p.data(), m.data(), v.data(),
                     {.all_or_nothing = true, .stats = &atomic});
    CHECK(atomic.bytes_read == s.bytes_read);
    CHECK(s.peak_staged < atomic.peak_staged);
  }
  CHECK(same(c.assembled(), want));
}

TEST_CASE("zero checkpoint: a weights-only checkpoint loads with zero moments") {
  const auto L = zf::layout_of(small_model());
  const flat_state want = random_state(L.total, 3);
  temp_dir d("zweights");
  st::checkpoint_view v;
  v.step = 0;
  v.layout = &L;
  v.params = want.p.data();
  st::save_checkpoint(d.path, v, 1);
  for (int stage : {0, 1, 3}) {
    CAPTURE(stage);
    world b(2, stage);
    st::load_ranks(b.ranks, d.path, L);
    auto got = b.assembled();
    CHECK(std::memcmp(got.p.data(), want.p.data(), L.total * 4) == 0);
    CHECK(std::all_of(got.m.begin(), got.m.end(), [](float x) { return x == 0; }));
  }
}
