// Checkpoint format 2: parallel writers, loading any slice with any world size, exact fragment
// coverage, crash safety under SIGKILL, corruption / truncation / missing files / garbage
// manifests, export -> import round trip, and a PyTorch reading of the export.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

zf::model_config small_model() {
  zf::model_config m;
  m.n_layer = 2;
  m.n_embd = 24;
  m.n_head = 2;
  m.vocab_size = 50;
  m.n_positions = 12;
  return m;
}

using slices = std::vector<std::pair<std::size_t, std::size_t>>;

// ZeRO's even partition: world chunks of ceil(total / world); the last slice may be shorter.
slices even_partition(std::size_t total, int world) {
  const std::size_t chunk = (total + world - 1) / world;
  slices s;
  for (int r = 0; r < world; ++r) {
    const std::size_t b = std::min(total, r * chunk);
    s.push_back({b, std::min(total, b + chunk)});
  }
  return s;
}

// Parameters and moments with arbitrary bit patterns (NaNs, subnormals, -0 included).
struct state {
  zf::param_layout layout;
  std::vector<float> p, m, v;
  explicit state(const zf::model_config& mc, uint32_t seed) : layout(zf::layout_of(mc)) {
    std::mt19937 rng(seed);
    for (auto* b : {&p, &m, &v}) {
      b->resize(layout.total);
      for (auto& x : *b) {
        uint32_t bits = rng();
        std::memcpy(&x, &bits, 4);
      }
    }
  }
  const float* buf(int kind) const {
    return kind == 0 ? p.data() : kind == 1 ? m.data() : v.data();
  }
};

// Writes one step with `world` writer threads (each its own slice) and commits it.
fs::path write_world(const fs::path& root, int step, const state& s, int world,
                     const st::write_options& o = {}, bool moments = true, int keep = 3,
                     const std::string& toml = "") {
  const fs::path tmp = st::begin_checkpoint(root, step);
  const auto parts = even_partition(s.layout.total, world);
  std::vector<std::vector<st::fragment>> per(world);
  std::vector<std::exception_ptr> errs(world);
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r)
    th.emplace_back([&, r] {
      try {
        auto [b, e] = parts[r];
        st::shard_data d{b, e, s.p.data() + b, moments ? s.m.data() + b : nullptr,
                         moments ? s.v.data() + b : nullptr};
        per[r] = st::write_shard(tmp, r, s.layout, d, o);
      } catch (...) {
        errs[r] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
  std::vector<st::fragment> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  return st::commit_checkpoint(root, tmp, s.layout, all,
                               {step, world, 1, toml, {{"step", step}, {"world", world}}}, keep);
}

bool same_bits(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

std::vector<float> sentinel(std::size_t n) {
  return std::vector<float>(n, -12345.5f);
}

void flip_byte_at(const fs::path& p, uint64_t at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x20);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += x + "\n";
  return s;
}

}  // namespace

TEST_CASE("checkpoint v2: 1-4 writers, loaded by every world size, bit-identical") {
  temp_dir dir("worlds");
  const state s(small_model(), 11);
  const std::size_t total = s.layout.total;
  std::mt19937 rng(5);
  // small bounce buffers: many chunks per section, writes in flight wrapping the pool
  st::write_options small;
  small.chunk_bytes = 8192;
  small.queue_depth = 3;
  for (int world = 1; world <= 4; ++world) {
    CAPTURE(world);
    for (const auto& [tag, opts] :
         {std::pair{"default", st::write_options{}}, std::pair{"small", small},
          std::pair{"buffered", st::write_options{65536, 2, false}}}) {
      CAPTURE(tag);
      const fs::path root = dir / fmt::format("w{}_{}", world, tag);
      const fs::path d = write_world(root, 7, s, world, opts);
      CHECK(d == root / "step-000007");

      // the files: one per writer, sections 4 KiB-aligned
      const auto parts = even_partition(total, world);
      auto man = st::read_checkpoint_manifest(root);
      CHECK(man.world == world);
      CHECK(man.zero_stage == 1);
      CHECK(man.step == 7);
      CHECK(man.state["world"] == world);
      REQUIRE(man.files.size() == static_cast<std::size_t>(world));
      for (int r = 0; r < world; ++r) {
        const uint64_t n = (parts[r].second - parts[r].first) * 4;
        const uint64_t stride = (n + 4095) / 4096 * 4096;
        CHECK(man.files[r].first == fmt::format("rank-{:05d}.bin", r));
        CHECK(man.files[r].second == 2 * stride + n);
        CHECK(fs::file_size(d / man.files[r].first) == 2 * stride + n);
      }

      // fragments cover every tensor exactly, one per writer whose slice meets it, per kind
      REQUIRE(man.tensors.size() == s.layout.params.size());
      for (auto& p : s.layout.params) {
        const st::tensor_entry* t = man.find(p.name);
        REQUIRE(t);
        CHECK(t->shape == p.shape);
        CHECK(t->dtype == "F32");
        int meets = 0;
        for (auto [b, e] : parts) meets += b < p.offset + p.numel && e > p.offset;
        for (int k = 0; k < 3; ++k) {
          uint64_t covered = 0;
          int count = 0;
          for (auto& f : t->fragments) {
            if (f.kind != k) continue;
            CHECK(f.elem_begin == covered);
            covered += f.length / 4;
            ++count;
            // the CRC is of exactly those bytes of the source buffer
            CHECK(f.crc32 == st::crc32_of(s.buf(k) + p.offset + f.elem_begin, f.length));
          }
          CHECK(covered == p.numel);
          CHECK(count == meets);
        }
      }
      auto rep = st::verify_checkpoint(d);
      INFO(joined(rep.problems));
      CHECK(rep.ok);
      CHECK(rep.step == 7);
      CHECK(rep.bytes == 3 * total * sizeof(float));

      // every other world size reads its slices
      for (int lw = 1; lw <= 4; ++lw) {
        auto P = sentinel(total), M = sentinel(total), V = sentinel(total);
        for (auto [b, e] : even_partition(total, lw))
          st::load_range(root, s.layout, b, e, P.data() + b, M.data() + b, V.data() + b);
        CHECK(same_bits(P.data(), s.p.data(), total));
        CHECK(same_bits(M.data(), s.m.data(), total));
        CHECK(same_bits(V.data(), s.v.data(), total));
      }
      // arbitrary slices, some kinds skipped
      for (int i = 0; i < 12; ++i) {
        std::size_t a = rng() % (total + 1), b = rng() % (total + 1);
        if (a > b) std::swap(a, b);
        if (i == 0) a = b = total / 2;  // empty
        if (i == 1) b = a + 1 <= total ? a + 1 : a;
        auto P = sentinel(b - a), V = sentinel(b - a);
        st::load_range(d, s.layout, a, b, P.data(), nullptr, V.data());
        CHECK(same_bits(P.data(), s.p.data() + a, b - a));
        CHECK(same_bits(V.data(), s.v.data() + a, b - a));
      }
      // the single-writer API reads the same checkpoint
      auto l = st::load_checkpoint(root, s.layout);
      CHECK(same_bits(l.params.data(), s.p.data(), total));
      CHECK(same_bits(l.exp_avg_sq.data(), s.v.data(), total));
    }
  }
}

TEST_CASE("checkpoint v2: more writers than elements, and weights only") {
  temp_dir dir("edge");
  zf::model_config mc = small_model();
  const state s(mc, 3);
  // world 7 over a tiny range leaves empty slices at the end: no file, no fragment
  zf::param_layout one;
  one.params.push_back({"wte.weight", {2, 3}, 0, 6, true});
  one.total = 6;
  state tiny = s;
  tiny.layout = one;
  const fs::path d = write_world(dir / "seven", 1, tiny, 7);
  auto man = st::read_checkpoint_manifest(d);
  CHECK(man.files.size() == 6);  // chunk 1: ranks 0-5 hold one element each, rank 6 nothing
  CHECK_FALSE(fs::exists(d / "rank-00006.bin"));
  std::vector<float> P(6);
  st::load_range(d, one, 0, 6, P.data(), nullptr, nullptr);
  CHECK(same_bits(P.data(), s.p.data(), 6));

  // weights only: asking for a moment names the tensor and the reason
  const fs::path w = write_world(dir / "weights", 2, s, 3, {}, false);
  CHECK_FALSE(st::read_checkpoint_manifest(w).has_kind(st::kind_exp_avg));
  auto M = sentinel(s.layout.total);
  auto msg =
      error_of([&] { st::load_range(w, s.layout, 0, s.layout.total, nullptr, M.data(), nullptr); });
  CHECK(contains(msg, "no exp_avg"));
  CHECK(contains(msg, "'wte.weight'"));
  CHECK(st::verify_checkpoint(w).ok);
  auto l = st::load_checkpoint(w, s.layout);
  CHECK(l.exp_avg.empty());
  CHECK(same_bits(l.params.data(), s.p.data(), s.layout.total));
}

TEST_CASE("checkpoint v2: commit refuses fragments that do not cover every tensor") {
  temp_dir dir("cover");
  const state s(small_model(), 4);
  const fs::path root = dir.path;
  write_world(root, 1, s, 1);
  const fs::path tmp = st::begin_checkpoint(root, 2);
  const auto parts = even_partition(s.layout.total, 2);
  auto f0 = st::write_shard(tmp, 0, s.layout,
                            {parts[0].first, parts[0].second, s.p.data(), s.m.data(), s.v.data()});
  auto msg = error_of([&] {
    st::commit_checkpoint(root, tmp, s.layout, f0, {2, 2, 1, "", {}}, 3);
  });
  CHECK(contains(msg, "covers"));
  CHECK_FALSE(fs::exists(root / "step-000002"));
  CHECK(st::read_manifest(root).step == 1);  // latest untouched

  // an existing step is never overwritten by another checkpoint
  msg = error_of([&] { write_world(root, 1, state(small_model(), 5), 1); });
  CHECK(contains(msg, "already exists"));
  CHECK(same_bits(st::load_checkpoint(root / "step-000001", s.layout).params.data(), s.p.data(),
                  s.layout.total));
  // a slice outside the layout
  msg = error_of([&] {
    st::write_shard(tmp, 0, s.layout, {0, s.layout.total + 1, s.p.data(), nullptr, nullptr});
  });
  CHECK(contains(msg, "outside"));
}

TEST_CASE("checkpoint v2: resume finds a complete step that latest does not name yet") {
  // A SIGKILL (or a full disk) between the rename of step-N.tmp and the move of `latest` leaves
  // a complete step-N while `latest` names N-1, or no `latest` at all for the first checkpoint.
  // The step folders are the truth and `latest` a hint: resolving the root finds step-N, so the
  // resumed run continues from N and never has to write (over) step-N again.
  temp_dir dir("window");
  const state s(small_model(), 5), s2(small_model(), 6);
  const fs::path root = dir.path;
  write_world(root, 1, s, 1);
  fs::remove(root / "latest");  // the first commit, killed before `latest` existed
  CHECK(st::has_checkpoint(root));
  CHECK(st::read_manifest(root).step == 1);
  write_world(root, 2, s2, 2);
  std::ofstream(root / "latest") << "step-000001\n";  // killed before `latest` moved to step 2
  CHECK(st::read_manifest(root).step == 2);
  CHECK(st::read_manifest(root / "latest").step == 2);
  auto l = st::load_checkpoint(root, s2.layout);
  CHECK(same_bits(l.params.data(), s2.p.data(), s2.layout.total));
  // a step folder is never overwritten by another checkpoint, and a re-run that writes the same
  // one again is not blocked by it (it finishes the commit: `latest` moves to step 2)
  CHECK(contains(error_of([&] { write_world(root, 2, s, 2); }), "already exists"));
  CHECK(write_world(root, 2, s2, 2) == root / "step-000002");
  CHECK(st::read_text_file(root / "latest") == "step-000002\n");
  // a newer folder without a readable manifest (a leftover, a damaged disk) is not a checkpoint
  fs::create_directory(root / "step-000003");
  std::ofstream(root / "step-000003" / "manifest") << "garbage";
  CHECK(st::read_manifest(root).step == 2);
  // and `latest` naming a missing folder is still said, not skipped
  std::ofstream(root / "latest") << "step-000009\n";
  CHECK(contains(error_of([&] { st::read_manifest(root); }), "step-000009"));
  // an empty root holds none
  temp_dir empty("window_empty");
  CHECK_FALSE(st::has_checkpoint(empty.path));
}

namespace {

// Values that identify the step: params[0] == step exactly.
void fill_step(int step, std::vector<float>& p, std::vector<float>& m, std::vector<float>& v) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    p[i] = float(step) + 0.001f * float(i);
    m[i] = -float(step) - 0.5f * float(i);
    v[i] = float(step) * 1e-3f + float(i);
  }
  p[0] = float(step);
}

int next_step(const fs::path& root) {
  int best = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root, ec)) {
    auto n = e.path().filename().string();
    if (e.is_directory() && n.size() == 11 && n.starts_with("step-"))
      best = std::max(best, std::stoi(n.substr(5)));
  }
  return best + 1;
}

[[noreturn]] void crash_child(const fs::path& root, const zf::param_layout& L, int from) {
  try {
    std::vector<float> p(L.total), m(L.total), v(L.total);
    const auto parts = even_partition(L.total, 2);
    for (int step = from; step <= 1000; ++step) {
      fill_step(step, p, m, v);
      const fs::path tmp = st::begin_checkpoint(root, step);
      std::vector<st::fragment> a, b;
      std::thread t([&] {
        auto [x, y] = parts[1];
        b = st::write_shard(tmp, 1, L, {x, y, p.data() + x, m.data() + x, v.data() + x});
      });
      auto [x, y] = parts[0];
      a = st::write_shard(tmp, 0, L, {x, y, p.data() + x, m.data() + x, v.data() + x});
      t.join();
      a.insert(a.end(), b.begin(), b.end());
      st::commit_checkpoint(root, tmp, L, a, {step, 2, 1, "", {{"step", step}}}, 2);
    }
    ::_exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash child: %s\n", e.what());
    ::_exit(3);
  }
}

}  // namespace

TEST_CASE("checkpoint v2: SIGKILL at random moments always leaves a loadable latest") {
  temp_dir dir("crash");
  const fs::path root = dir / "ckpt";
  fs::create_directories(root);
  zf::model_config mc;
  mc.n_layer = 1;
  mc.n_embd = 16;
  mc.n_head = 2;
  mc.vocab_size = 40;
  mc.n_positions = 8;
  const auto L = zf::layout_of(mc);
  std::vector<float> p(L.total), m(L.total), v(L.total);
  // how long one step takes here, so kills land anywhere in a step (and across steps)
  const auto t0 = std::chrono::steady_clock::now();
  {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) crash_child(dir / "timing", L, 996);  // 5 steps
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  const double step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
  const int max_delay_us = static_cast<int>(std::clamp(step_ms * 3000, 2000.0, 300000.0));
  std::mt19937 rng(20240607);
  int kills = 0, runs = 0, last = 0;
  while (kills < 60 && runs < 600) {
    const int from = next_step(root);
    if (from > 1000) break;
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) crash_child(root, L, from);
    ++runs;
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % max_delay_us));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status)) {  // it finished (or failed) before the kill
      CHECK(WEXITSTATUS(status) == 0);
      break;
    }
    CHECK(WTERMSIG(status) == SIGKILL);
    if (!fs::exists(root / "latest")) continue;  // killed before its first commit
    ++kills;
    auto r = st::verify_checkpoint(root / "latest");
    INFO("after kill " << kills << " (child from step " << from << "): " << joined(r.problems));
    REQUIRE(r.ok);
    CHECK(r.step >= last);
    last = r.step;
    auto P = sentinel(L.total), M = sentinel(L.total), V = sentinel(L.total);
    st::load_range(root, L, 0, L.total, P.data(), M.data(), V.data());
    fill_step(r.step, p, m, v);
    CHECK(P[0] == float(r.step));
    CHECK(same_bits(P.data(), p.data(), L.total));
    CHECK(same_bits(M.data(), m.data(), L.total));
    CHECK(same_bits(V.data(), v.data(), L.total));
    CHECK(st::read_manifest(root).state["step"] == r.step);
  }
  MESSAGE(fmt::format("{} kills in {} runs; latest reached step {}; {:.1f} ms per step", kills,
                      runs, last, step_ms));
  CHECK(kills >= 60);
  CHECK(last > 1);
  // what a crash can leave behind: at most one .tmp folder, no half-pruned step folder
  int tmps = 0;
  for (auto& e : fs::directory_iterator(root)) {
    const auto n = e.path().filename().string();
    tmps += n.ends_with(".tmp") && e.is_directory();
    if (e.is_directory() && !n.ends_with(".tmp") && !n.ends_with(".del"))
      CHECK(st::verify_checkpoint(e.path()).ok);
  }
  CHECK(tmps <= 1);
}

TEST_CASE("checkpoint v2: a corrupt fragment names file and tensor and writes nothing") {
  temp_dir dir("corrupt");
  const state s(small_model(), 21);
  const std::size_t total = s.layout.total;
  const fs::path d = write_world(dir.path, 3, s, 3);
  auto man = st::read_checkpoint_manifest(d);
  const st::tensor_entry* t = man.find("h.0.attn.c_attn.weight");
  REQUIRE(t);
  const st::fragment* f = nullptr;
  for (auto& x : t->fragments)
    if (x.kind == st::kind_exp_avg) f = &x;  // the last exp_avg fragment of it
  REQUIRE(f);
  flip_byte_at(d / f->file, f->offset + f->length / 2);

  auto P = sentinel(total), M = sentinel(total), V = sentinel(total);
  const auto S = sentinel(total);
  auto msg = error_of([&] { st::load_range(d, s.layout, 0, total, P.data(), M.data(), V.data()); });
  CHECK(contains(msg, (d / f->file).string()));
  CHECK(contains(msg, "'h.0.attn.c_attn.weight'"));
  CHECK(contains(msg, "corrupt"));
  CHECK(contains(msg, "CRC"));
  CHECK(same_bits(P.data(), S.data(), total));  // nothing written, not even other kinds
  CHECK(same_bits(M.data(), S.data(), total));
  CHECK(same_bits(V.data(), S.data(), total));

  // slices and kinds that do not need the fragment still load
  st::load_range(d, s.layout, 0, total, P.data(), nullptr, V.data());
  CHECK(same_bits(P.data(), s.p.data(), total));
  CHECK(same_bits(V.data(), s.v.data(), total));
  auto* wte = s.layout.find("wte.weight");
  st::load_range(d, s.layout, 0, wte->numel, nullptr, M.data(), nullptr);
  CHECK(same_bits(M.data(), s.m.data(), wte->numel));

  auto rep = st::verify_checkpoint(d);
  CHECK_FALSE(rep.ok);
  REQUIRE(rep.problems.size() == 1);
  CHECK(contains(rep.problems[0], (d / f->file).string()));
  CHECK(contains(rep.problems[0], "'h.0.attn.c_attn.weight'"));
  msg = error_of([&] { st::load_checkpoint(d, s.layout); });
  CHECK(contains(msg, "'h.0.attn.c_attn.weight'"));
}

TEST_CASE("checkpoint v2: truncated and missing rank files") {
  temp_dir dir("trunc");
  const state s(small_model(), 22);
  const std::size_t total = s.layout.total;
  const fs::path d = write_world(dir.path, 4, s, 2);
  const fs::path r1 = d / "rank-00001.bin";
  const auto parts = even_partition(total, 2);
  const auto S = sentinel(total);
  auto P = sentinel(total), M = sentinel(total), V = sentinel(total);

  fs::resize_file(r1, fs::file_size(r1) - 4);
  auto msg = error_of([&] { st::load_range(d, s.layout, 0, total, P.data(), M.data(), V.data()); });
  CHECK(contains(msg, r1.string()));
  CHECK(contains(msg, "truncated"));
  CHECK(same_bits(P.data(), S.data(), total));
  CHECK(same_bits(M.data(), S.data(), total));
  // rank 0's slice does not touch rank 1's file
  st::load_range(d, s.layout, 0, parts[0].second, P.data(), nullptr, nullptr);
  CHECK(same_bits(P.data(), s.p.data(), parts[0].second));
  auto rep = st::verify_checkpoint(d);
  CHECK_FALSE(rep.ok);
  CHECK(contains(joined(rep.problems), "truncated"));

  fs::remove(r1);
  P = sentinel(total);
  msg = error_of([&] { st::load_range(d, s.layout, 0, total, P.data(), nullptr, nullptr); });
  CHECK(contains(msg, r1.string()));
  CHECK(contains(msg, "missing"));
  CHECK(same_bits(P.data(), S.data(), total));
  rep = st::verify_checkpoint(d);
  CHECK_FALSE(rep.ok);
  CHECK(contains(joined(rep.problems), "missing"));
}

TEST_CASE("checkpoint v2: a garbage manifest is a clear error") {
  temp_dir dir("garbage");
  const state s(small_model(), 23);
  const std::size_t total = s.layout.total;
  const fs::path d = write_world(dir.path, 5, s, 2);
  const fs::path man = d / "manifest";
  const std::string good = st::read_text_file(man);
  std::mt19937 rng(1);
  std::string noise(4096, '\0');
  for (auto& c : noise) c = static_cast<char>(rng());
  for (const std::string& bad :
       {noise, std::string("hello, world"), std::string(), good.substr(0, good.size() - 8),
        good + std::string(8, '\0'), std::string(64, '\0')}) {
    std::ofstream(man, std::ios::trunc | std::ios::binary) << bad;
    auto P = sentinel(total);
    auto msg = error_of([&] { st::load_range(d, s.layout, 0, total, P.data(), nullptr, nullptr); });
    INFO(msg);
    CHECK(contains(msg, man.string()));
    CHECK((contains(msg, "corrupt checkpoint manifest") ||
           contains(msg, "not a zeroflow checkpoint manifest")));
    CHECK(same_bits(P.data(), sentinel(total).data(), total));
    auto rep = st::verify_checkpoint(d);
    CHECK_FALSE(rep.ok);
    CHECK(rep.problems.size() == 1);
  }
  fs::remove(man);
  auto msg = error_of([&] { st::read_manifest(d); });
  CHECK(contains(msg, "no checkpoint at"));
  std::ofstream(man, std::ios::binary) << good;
  CHECK(st::verify_checkpoint(d).ok);
}

namespace {

zf::model_config hf_model() {
  zf::model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.n_positions = 32;
  m.vocab_size = 96;
  return m;
}

// A trained-looking model saved by 2 writers with its run config.
fs::path save_model(const fs::path& root, zf::transformer& model) {
  zf::run_config rc;
  rc.model = hf_model();
  rc.train.seq_len = 32;
  state s(rc.model, 1);
  s.p.assign(model.params().data(), model.params().data() + s.layout.total);
  return write_world(root, 9, s, 2, {}, true, 3, zf::to_toml(rc));
}

}  // namespace

TEST_CASE("checkpoint v2: export to safetensors and import back, bit-exact") {
  temp_dir dir("export");
  zf::transformer model(hf_model());
  model.init_weights(7);
  const auto& L = model.layout();
  const fs::path ck = save_model(dir / "run", model);
  const fs::path file = dir / "hf" / "model.safetensors";
  const fs::path cj = st::export_safetensors(ck, file);
  CHECK(cj == dir / "hf" / "config.json");
  auto c = nlohmann::json::parse(st::read_text_file(cj));
  CHECK(c["model_type"] == "gpt2");
  CHECK(c["architectures"][0] == "GPT2LMHeadModel");
  CHECK(c["n_layer"] == 2);
  CHECK(c["n_ctx"] == 32);
  CHECK(c["vocab_size"] == 96);
  CHECK(c["activation_function"] == "gelu_new");
  CHECK(c["layer_norm_epsilon"] == 1e-5);

  auto msg = error_of([&] { st::export_safetensors(ck, file); });
  CHECK(contains(msg, "refusing to overwrite"));

  const fs::path imp = st::import_safetensors(file, dir / "imported");
  CHECK(imp == dir / "imported" / "step-000000");
  auto l = st::load_checkpoint(dir / "imported", L);
  CHECK(l.step == 0);
  CHECK(l.exp_avg.empty());
  CHECK(same_bits(l.params.data(), model.params().data(), L.total));
  zf::run_config back;
  zf::apply_toml(back, l.config_toml, "imported");
  CHECK(back.model.n_embd == 32);
  CHECK(back.model.vocab_size == 96);
  CHECK(st::verify_checkpoint(imp).ok);
  msg = error_of([&] { st::import_safetensors(file, dir / "imported"); });
  CHECK(contains(msg, "already holds checkpoints"));

  // a config.json that does not fit the tensors: the error names the tensor
  fs::create_directories(dir / "bad");
  fs::copy_file(file, dir / "bad" / "model.safetensors");
  c["n_positions"] = 64;
  c["n_ctx"] = 64;
  std::ofstream(dir / "bad" / "config.json") << c.dump();
  msg = error_of([&] { st::import_safetensors(dir / "bad" / "model.safetensors", dir / "x"); });
  CHECK(contains(msg, "wpe.weight"));
  CHECK(contains(msg, "[32, 32]"));
  CHECK(contains(msg, "[64, 32]"));
  CHECK_FALSE(fs::exists(dir / "x" / "latest"));
}

TEST_CASE("checkpoint v2: PyTorch reads the export and computes the same logits") {
  temp_dir dir("interop");
  zf::transformer model(hf_model());
  model.init_weights(3);
  const fs::path ck = save_model(dir / "run", model);
  const fs::path file = dir / "hf" / "model.safetensors";
  st::export_safetensors(ck, file);

  const std::vector<int> ids{3, 1, 4, 1, 5, 9, 2, 6, 53, 95, 0, 17};
  const auto ref = zf::testing::twin_logits_of_export(file.string(), ids);
  if (ref.empty()) {
    MESSAGE("SKIPPED: /usr/bin/python3 cannot import torch; export interop not checked");
    return;
  }
  const int T = static_cast<int>(ids.size()), V = model.spec().vocab_size;
  REQUIRE(ref.size() == static_cast<std::size_t>(T));

  // our forward on the weights the checkpoint holds
  zf::transformer ours(hf_model());
  auto l = st::load_checkpoint(ck, ours.layout());
  std::memcpy(ours.params().data(), l.params.data(), l.params.size() * sizeof(float));
  ours.forward(ids.data(), nullptr, 1, T);
  double max_ref = 0, max_diff = 0;
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) {
      const double r = ref[t][v], o = ours.logits()[t * V + v];
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(r - o));
    }
  MESSAGE(fmt::format("max |logit| {:.4g}, max |ours - torch| {:.3g}", max_ref, max_diff));
  CHECK(max_ref > 0);
  CHECK(max_diff <= 1e-5 * max_ref);
}
