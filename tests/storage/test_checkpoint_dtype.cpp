// Checkpoints record the dtype of every fragment (storage/manifest.capnp Fragment.dtype): f32 is
// written and read; a manifest naming bf16 is refused by name (until bf16 exists), never
// reinterpreted; a manifest written before the field existed reads as f32.
#include <doctest/doctest.h>

#include <cstring>

#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/layout_fixture.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

zf::param_layout small_layout() {
  return zf::testing::shape_layout(1, 16, 2, 40, 8);
}

// The layout a manifest describes: its tensors in order, packed (how every zeroflow layout so
// far is laid out), so the fixture does not depend on today's model code.
zf::param_layout layout_of_manifest(const st::checkpoint_manifest& m) {
  zf::param_layout L;
  for (auto& t : m.tensors) {
    zf::param_info p;
    p.name = t.name;
    p.shape = t.shape;
    p.offset = L.total;
    p.numel = t.numel();
    L.total += p.numel;
    L.params.push_back(p);
  }
  L.regions.push_back({0, L.total});
  return L;
}

}  // namespace

TEST_CASE("checkpoint dtype: every fragment is written and read back as f32") {
  temp_dir d("dtype");
  const auto L = small_layout();
  std::vector<float> p(L.total, 1.5f), m(L.total, -2.0f), v(L.total, 0.25f);
  st::checkpoint_view cv;
  cv.step = 3;
  cv.layout = &L;
  cv.params = p.data();
  cv.exp_avg = m.data();
  cv.exp_avg_sq = v.data();
  st::save_checkpoint(d.path, cv);
  auto man = st::read_checkpoint_manifest(d.path);
  std::size_t n = 0;
  for (auto& t : man.tensors) {
    CHECK(t.dtype == "F32");
    for (auto& f : t.fragments) {
      CHECK(f.dtype == zf::dtype::f32);
      ++n;
    }
  }
  CHECK(n == 3 * L.params.size());
}

TEST_CASE("checkpoint dtype: a manifest saying bf16 for an f32 layout is refused by name") {
  temp_dir d("bf16");
  const auto L = small_layout();
  std::vector<float> p(L.total, 1.0f);
  const fs::path tmp = st::begin_checkpoint(d.path, 1);
  auto frags = st::write_shard(tmp, 0, L, st::shard_data{0, L.total, p.data(), nullptr, nullptr});
  // The same bytes relabelled as bf16: two bytes an element, so each fragment's length halves
  // and the commit's coverage check still passes (the commit trusts what writers declare).
  const std::string target = L.params[1].name;
  for (auto& f : frags)
    if (f.tensor == target) {
      f.dtype = zf::dtype::bf16;
      f.length /= 2;
    }
  st::commit_checkpoint(d.path, tmp, L, frags, {1, 1, 0, "", {}}, 3);
  auto man = st::read_checkpoint_manifest(d.path);
  CHECK(man.find(target)->fragments[0].dtype == zf::dtype::bf16);

  std::vector<float> out(L.total, -1.0f);
  auto msg = error_of([&] { st::load_range(d.path, L, 0, L.total, out.data(), nullptr, nullptr); });
  CHECK(contains(msg, "'" + target + "'"));
  CHECK(contains(msg, "stored as bf16"));
  CHECK(contains(msg, "not supported yet"));
  CHECK(out[0] == -1.0f);  // nothing reached the outputs
  msg = error_of([&] { st::load_checkpoint(d.path, L); });
  CHECK(contains(msg, "stored as bf16"));
  // a range that does not touch the bf16 tensor still loads
  st::load_range(d.path, L, 0, L.params[0].numel, out.data(), nullptr, nullptr);
  CHECK(out[0] == 1.0f);
  auto rep = st::verify_checkpoint(d.path);
  CHECK_FALSE(rep.ok);
  bool named = false;
  for (auto& pr : rep.problems) named = named || contains(pr, "stored as bf16");
  CHECK(named);
}

TEST_CASE("checkpoint dtype: a manifest from before fragment dtypes loads as f32") {
  // tests/golden/ckpt_pre_dtype: written by the build before Fragment.dtype existed (a 1-layer
  // GPT-2 layout, params[i] = 0.5 i - 3, exp_avg[i] = -0.25 i, exp_avg_sq[i] = 0.125 i).
  const fs::path dir = fs::path(ZF_SOURCE_DIR) / "tests" / "golden" / "ckpt_pre_dtype";
  auto man = st::read_checkpoint_manifest(dir);
  CHECK(man.step == 7);
  for (auto& t : man.tensors)
    for (auto& f : t.fragments) CHECK(f.dtype == zf::dtype::f32);
  const auto L = layout_of_manifest(man);
  auto ck = st::load_checkpoint(dir, L);
  REQUIRE(ck.exp_avg.size() == L.total);
  bool exact = true;
  for (std::size_t i = 0; i < L.total; ++i)
    exact = exact && ck.params[i] == 0.5f * float(i) - 3 && ck.exp_avg[i] == -0.25f * float(i) &&
            ck.exp_avg_sq[i] == 0.125f * float(i);
  CHECK(exact);
  CHECK(st::verify_checkpoint(dir).ok);
}
