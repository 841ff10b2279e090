// A full disk at every I/O step of a checkpoint commit (issue 9, "Commit window"): the seam of
// storage/fault_inject.hpp fails the k-th step of a commit of step 2 (and every later one, as a
// disk that filled up there would) with ENOSPC, for every k a clean commit takes. Each time the
// commit must throw a zf::error naming the file and the full disk, step 1 must still load bit for
// bit and verify, the newest checkpoint must be step 1 or a complete step 2 (never a partial
// one), nothing of the failed write may be left to fill the disk, and a retry once there is
// space again must commit step 2, whatever the failed attempt left behind.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/checkpoint_commit.hpp"
#include "storage/fault_inject.hpp"
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

struct state {  // arbitrary bit patterns (NaNs included), so "loads" means bit for bit
  std::vector<float> p, m, v;
  state(std::size_t n, uint32_t seed) : p(n), m(n), v(n) {
    std::mt19937 rng(seed);
    for (auto* b : {&p, &m, &v})
      for (auto& x : *b) {
        const uint32_t bits = rng();
        std::memcpy(&x, &bits, 4);
      }
  }
};

// The ways a step is committed: one committer writing one file or three (three threads), and
// save_checkpoint (one writer, the import path).
enum class how { one_file, three_files, save };

fs::path commit(const fs::path& root, const zf::param_layout& L, const state& s, int step, how h) {
  constexpr int keep = 1;  // step 2's commit prunes step 1: the prune's rename is a step too
  if (h == how::save)
    return st::save_checkpoint(root, {step, "", &L, s.p.data(), s.m.data(), s.v.data(), {}}, keep);
  const int files = h == how::one_file ? 1 : 3;
  const std::size_t piece = (L.total + files - 1) / files;
  std::vector<st::checkpoint_part> parts;
  for (int f = 0; f < files; ++f) {
    const std::size_t b = std::min(L.total, f * piece), e = std::min(L.total, b + piece);
    parts.push_back({f, {{b, e, s.p.data() + b, s.m.data() + b, s.v.data() + b}}});
  }
  st::checkpoint_committer c(root, L, keep);
  return c.write({step, files, 1, "", {{"step", step}}}, parts);
}

// dir (a step folder or a root) loads as `want`, bit for bit, and verifies as `ckpt verify` does.
void check_is(const fs::path& dir, const zf::param_layout& L, const state& want, int step) {
  auto got = st::load_checkpoint(dir, L);
  CHECK(got.step == step);
  CHECK(std::memcmp(got.params.data(), want.p.data(), L.total * 4) == 0);
  CHECK(std::memcmp(got.exp_avg.data(), want.m.data(), L.total * 4) == 0);
  CHECK(std::memcmp(got.exp_avg_sq.data(), want.v.data(), L.total * 4) == 0);
  auto rep = st::verify_checkpoint(dir);
  INFO((rep.problems.empty() ? std::string() : rep.problems[0]));
  CHECK(rep.ok);
}

std::vector<std::string> entries(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(root)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The I/O steps a clean commit of step 2 over step 1 takes.
int64_t steps_of_commit(const zf::param_layout& L, const state& s1, const state& s2, how h) {
  temp_dir d("fulldisk_count");
  commit(d.path, L, s1, 1, h);
  st::detail::arm_io_faults(0);  // count only
  commit(d.path, L, s2, 2, h);
  return st::detail::disarm_io_faults();
}

}  // namespace

TEST_CASE("checkpoint commit: a full disk at every I/O step of the commit") {
  const auto L = small_layout();
  const state s1(L.total, 1), s2(L.total, 2);
  for (how h : {how::one_file, how::three_files, how::save}) {
    const int files = h == how::three_files ? 3 : 1;
    CAPTURE(files);
    CAPTURE(static_cast<int>(h));
    const int64_t steps = steps_of_commit(L, s1, s2, h);
    // per data file: create, a write per section (3), fsync; the manifest: create, write,
    // fsync, rename, fsync of the folder; .tmp created, renamed, ROOT fsynced; `latest` as the
    // manifest; the prune's rename
    CHECK(steps >= 5 * files + 5 + 3 + 5 + 1);
    int committed_before_failing = 0;  // failures after the rename: step 2 complete already
    for (int64_t k = 1; k <= steps; ++k) {
      CAPTURE(k);
      temp_dir d("fulldisk");
      const fs::path root = d.path;
      commit(root, L, s1, 1, h);
      st::detail::arm_io_faults(k);
      const std::string msg = error_of([&] { commit(root, L, s2, 2, h); });
      CHECK(st::detail::disarm_io_faults() >= k);  // the k-th step was reached (and failed)
      CAPTURE(msg);
      CHECK(contains(msg, "No space left on device"));
      CHECK(contains(msg, root.string()));  // names the file or folder it could not write

      check_is(root / "step-000001", L, s1, 1);
      const int newest = st::read_manifest(root).step;  // resume's answer
      CHECK((newest == 1 || newest == 2));
      check_is(root, L, newest == 2 ? s2 : s1, newest);
      CHECK(fs::exists(root / "step-000002") == (newest == 2));
      committed_before_failing += newest == 2;
      for (auto& e : entries(root))  // no partial folder, no latest.tmpNNN: the space is freed
        CHECK_MESSAGE(e.find(".tmp") == std::string::npos, e);

      // the disk has space again: a retry commits step 2, over whatever the failure left
      CHECK(commit(root, L, s2, 2, h) == root / "step-000002");
      check_is(root, L, s2, 2);
      CHECK(st::read_text_file(root / "latest") == "step-000002\n");
      CHECK(entries(root) == std::vector<std::string>{"latest", "step-000002"});
    }
    // the fsync of ROOT, `latest`'s five steps and the prune fail after the rename
    CHECK(committed_before_failing == 7);
  }
}

TEST_CASE("checkpoint commit: a different checkpoint in the way of a step is refused, not kept") {
  // The retry above finishes on an existing step folder because it holds what the retry wrote;
  // one holding anything else is never overwritten, and never taken for this step's checkpoint.
  const auto L = small_layout();
  const state s1(L.total, 1), other(L.total, 3);
  temp_dir d("fulldisk_other");
  commit(d.path, L, s1, 1, how::one_file);
  const std::string msg = error_of([&] { commit(d.path, L, other, 1, how::three_files); });
  CHECK(contains(msg, (d.path / "step-000001").string()));
  CHECK(contains(msg, "already exists with other contents"));
  check_is(d.path, L, s1, 1);
  CHECK(entries(d.path) == std::vector<std::string>{"latest", "step-000001"});  // .tmp removed
  // the same checkpoint written again is a success that changes nothing
  CHECK(commit(d.path, L, s1, 1, how::one_file) == d.path / "step-000001");
  check_is(d.path, L, s1, 1);
  // a damaged folder with the same manifest is refused naming the damage
  {
    std::fstream f(d.path / "step-000001" / "rank-00000.bin",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    const char c = static_cast<char>(f.get() ^ 0x5a);
    f.seekp(100);
    f.put(c);
  }
  const std::string dmg = error_of([&] { commit(d.path, L, s1, 1, how::one_file); });
  CHECK(contains(dmg, "does not verify"));
  CHECK(contains(dmg, "rank-00000.bin"));
  CHECK_FALSE(fs::exists(d.path / "step-000001.tmp"));
}
