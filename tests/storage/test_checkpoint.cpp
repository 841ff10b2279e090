// Checkpoints: bit-exact round trip, `latest`, pruning, refusal to overwrite, crash leftovers,
// and verification errors (corrupt, truncated, missing, layout mismatch, bad manifest).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::checkpoint_view;
using zf::storage::load_checkpoint;
using zf::storage::resolve_checkpoint;
using zf::storage::save_checkpoint;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

zf::model_config tiny_model(int n_embd = 8) {
  zf::model_config m;
  m.n_layer = 1;
  m.n_embd = n_embd;
  m.n_head = 2;
  m.vocab_size = 16;
  m.n_positions = 8;
  return m;
}

// A model's worth of parameters and moments with distinct values (including ones whose bit
// patterns a float->text->float path would not preserve).
struct state {
  zf::param_layout layout;
  std::vector<float> params, m, v;
  explicit state(const zf::model_config& mc, float salt = 0.0f) : layout(zf::layout_of(mc)) {
    params.resize(layout.total);
    m.resize(layout.total);
    v.resize(layout.total);
    for (std::size_t i = 0; i < layout.total; ++i) {
      params[i] = salt + 0.001f * float(i) - 0.37f + 1e-9f * float(i % 7);
      m[i] = -1.0f / float(i + 3) + salt;
      v[i] = 1e-8f * float(i + 1) + salt * salt;
    }
    params[0] = -0.0f;
    params[1] = 1e-40f;  // subnormal
  }
  checkpoint_view view(int step, bool moments = true) const {
    checkpoint_view c;
    c.step = step;
    c.config_toml = fmt::format("[train]\nsteps = {}\n", step * 10);
    c.layout = &layout;
    c.params = params.data();
    if (moments) {
      c.exp_avg = m.data();
      c.exp_avg_sq = v.data();
    }
    c.state = {{"step", step}, {"sampler", {{"next", step * 3}}}};
    return c;
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string latest_of(const fs::path& root) {
  auto s = zf::storage::read_text_file(root / "latest");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::vector<std::string> entries(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(root)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void flip_byte(const fs::path& p, std::size_t from_end) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(f.tellg());
  const std::streamoff at = size - static_cast<std::streamoff>(from_end);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(at);
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("checkpoint: save and load are bit-exact") {
  temp_dir dir("rt");
  const fs::path root = dir / "ckpt";
  state s(tiny_model());
  const fs::path saved = save_checkpoint(root, s.view(5));
  CHECK(saved == root / "step-000005");
  CHECK(fs::exists(saved / "rank-00000.bin"));
  CHECK(fs::exists(saved / "manifest"));
  CHECK_FALSE(fs::exists(root / "step-000005.tmp"));
  CHECK(latest_of(root) == "step-000005");

  auto l = load_checkpoint(saved, s.layout);
  CHECK(l.dir == saved);
  CHECK(l.step == 5);
  CHECK(l.config_toml == "[train]\nsteps = 50\n");
  CHECK(l.state["sampler"]["next"] == 15);
  CHECK(same_bits(l.params, s.params));
  CHECK(same_bits(l.exp_avg, s.m));
  CHECK(same_bits(l.exp_avg_sq, s.v));

  // read_manifest is the cheap path: no tensors
  auto man = zf::storage::read_manifest(root);
  CHECK(man.step == 5);
  CHECK(man.dir == saved);
  CHECK(man.params.empty());
  CHECK(man.config_toml == l.config_toml);

  // A weights-only checkpoint has no optim file and loads with empty moments.
  const fs::path w = save_checkpoint(dir / "weights", s.view(1, false));
  CHECK_FALSE(zf::storage::read_checkpoint_manifest(w).has_kind(zf::storage::kind_exp_avg));
  CHECK(fs::file_size(w / "rank-00000.bin") == s.layout.total * sizeof(float));
  auto lw = load_checkpoint(w, s.layout);
  CHECK(same_bits(lw.params, s.params));
  CHECK(lw.exp_avg.empty());
  CHECK(lw.exp_avg_sq.empty());

  // The config string in a real run is to_toml of the run config; it survives as text.
  zf::run_config rc;
  auto v = s.view(7);
  v.config_toml = zf::to_toml(rc);
  save_checkpoint(root, v);
  CHECK(load_checkpoint(root, s.layout).config_toml == zf::to_toml(rc));
}

TEST_CASE("checkpoint: latest names the newest and keep prunes older step folders") {
  temp_dir dir("keep");
  const fs::path root = dir.path;
  state s(tiny_model());
  for (int step : {10, 20, 30, 40}) {
    state si(tiny_model(), float(step));
    save_checkpoint(root, si.view(step), 2);
    CHECK(latest_of(root) == fmt::format("step-{:06d}", step));
  }
  CHECK(entries(root) == std::vector<std::string>{"latest", "step-000030", "step-000040"});
  auto l = load_checkpoint(root, s.layout);
  CHECK(l.step == 40);
  CHECK(same_bits(l.params, state(tiny_model(), 40.0f).params));
  CHECK(load_checkpoint(root / "step-000030", s.layout).step == 30);
}

TEST_CASE("checkpoint: pruning orders step folders numerically past step 999999") {
  // Regression test (bug fixed): (storage/checkpoint.cpp, step_dirs + the prune loop in
  // save_checkpoint): folders are named step-{:06d} and sorted as strings, so step-1000000 sorts
  // before step-999998 and the prune removes the NEWER checkpoint while keeping older ones
  // (train.steps allows up to 1e9). Fix: sort step_dirs by the parsed step number (std::stoll of
  // the part after "step-"), or zero-pad to a width that covers the step range (e.g.
  // {:09d}/{:010d}).
  temp_dir dir("prune_big");
  const fs::path root = dir.path;
  state s(tiny_model());
  for (int step : {999998, 999999, 1000000, 1000001}) save_checkpoint(root, s.view(step, false), 2);
  CHECK(latest_of(root) == "step-1000001");
  const auto left = entries(root);
  INFO("left on disk: " << fmt::format("{}", fmt::join(left, " ")));
  CHECK(left == std::vector<std::string>{"latest", "step-1000000", "step-1000001"});
}

TEST_CASE("checkpoint: saving to an existing step refuses and leaves it intact") {
  temp_dir dir("exists");
  const fs::path root = dir.path;
  state a(tiny_model(), 1.0f), b(tiny_model(), 2.0f);
  save_checkpoint(root, a.view(3));
  const auto crc_before = zf::storage::crc32_file(root / "step-000003" / "rank-00000.bin");
  auto msg = error_of([&] { save_checkpoint(root, b.view(3)); });
  CHECK(contains(msg, (root / "step-000003").string()));
  CHECK(contains(msg, "already exists"));
  CHECK(zf::storage::crc32_file(root / "step-000003" / "rank-00000.bin") == crc_before);
  CHECK(same_bits(load_checkpoint(root, a.layout).params, a.params));
  CHECK_FALSE(fs::exists(root / "step-000003.tmp"));
}

TEST_CASE("checkpoint: a leftover .tmp folder is ignored, then replaced by the next save") {
  temp_dir dir("tmp");
  const fs::path root = dir.path;
  state s(tiny_model());
  save_checkpoint(root, s.view(1));
  // a crash while writing step 2: a half-written folder, never committed
  const fs::path tmp = root / "step-000002.tmp";
  fs::create_directories(tmp);
  { std::ofstream(tmp / "model.safetensors") << "half"; }
  { std::ofstream(tmp / "junk.bin") << "x"; }
  CHECK(resolve_checkpoint(root) == root / "step-000001");
  CHECK(load_checkpoint(root, s.layout).step == 1);

  // pruning does not count (or delete) it
  save_checkpoint(root, s.view(3), 1);
  CHECK(fs::exists(tmp / "junk.bin"));
  CHECK_FALSE(fs::exists(root / "step-000001"));

  // the next save of step 2 clears the leftover and commits a clean folder
  state s2(tiny_model(), 2.0f);
  save_checkpoint(root, s2.view(2), 5);
  CHECK_FALSE(fs::exists(tmp));
  CHECK_FALSE(fs::exists(root / "step-000002" / "junk.bin"));
  CHECK(same_bits(load_checkpoint(root / "step-000002", s.layout).params, s2.params));
}

TEST_CASE("checkpoint: a corrupt byte is caught by the CRC") {
  temp_dir dir("crc");
  state s(tiny_model());
  const fs::path d = save_checkpoint(dir.path, s.view(4));
  flip_byte(d / "rank-00000.bin", 5);  // in the last tensor's exp_avg_sq
  auto msg = error_of([&] { load_checkpoint(d, s.layout); });
  CHECK(contains(msg, (d / "rank-00000.bin").string()));
  CHECK(contains(msg, "'ln_f.bias'"));
  CHECK(contains(msg, "corrupt"));
  CHECK(contains(msg, "CRC"));
  // read_manifest alone does not look at the tensors
  CHECK(zf::storage::read_manifest(d).step == 4);
}

TEST_CASE("checkpoint: truncated and missing files") {
  temp_dir dir("trunc");
  state s(tiny_model());
  const fs::path d = save_checkpoint(dir.path, s.view(6));
  const auto p = d / "rank-00000.bin";
  fs::resize_file(p, fs::file_size(p) - 4);
  auto msg = error_of([&] { load_checkpoint(d, s.layout); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "truncated"));

  fs::remove(p);
  msg = error_of([&] { load_checkpoint(d, s.layout); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "missing"));
}

TEST_CASE("checkpoint: a layout mismatch names the tensor") {
  temp_dir dir("layout");
  state s(tiny_model(8));
  const fs::path d = save_checkpoint(dir.path, s.view(2));
  const auto wide = zf::layout_of(tiny_model(16));
  auto msg = error_of([&] { load_checkpoint(d, wide); });
  CHECK(contains(msg, d.string()));
  CHECK(contains(msg, "'wte.weight'"));
  CHECK(contains(msg, "[16,8]"));
  CHECK(contains(msg, "[16,16]"));

  // a deeper model asks for a block the file does not have
  auto deep_cfg = tiny_model(8);
  deep_cfg.n_layer = 2;
  msg = error_of([&] { load_checkpoint(d, zf::layout_of(deep_cfg)); });
  CHECK(contains(msg, "'h.1.ln_1.weight'"));
}

TEST_CASE("checkpoint: resolve_checkpoint from step folder, root and run folder") {
  temp_dir dir("resolve");
  const fs::path run = dir / "run";
  const fs::path root = run / "checkpoints";
  state s(tiny_model());
  save_checkpoint(root, s.view(1));
  const fs::path d2 = save_checkpoint(root, s.view(2));
  CHECK(resolve_checkpoint(d2) == d2);
  CHECK(resolve_checkpoint(root / "step-000001") == root / "step-000001");
  CHECK(resolve_checkpoint(root) == d2);
  CHECK(resolve_checkpoint(run) == d2);
  CHECK(load_checkpoint(run, s.layout).step == 2);

  auto msg = error_of([&] { resolve_checkpoint(dir / "empty"); });
  CHECK(contains(msg, "no checkpoint at"));
  CHECK(contains(msg, (dir / "empty").string()));

  // latest naming a folder that is gone
  fs::remove_all(d2);
  msg = error_of([&] { resolve_checkpoint(root); });
  CHECK(contains(msg, "step-000002"));
  CHECK(contains(msg, "has no manifest"));
}

TEST_CASE("checkpoint: a bad manifest gives a clear error") {
  temp_dir dir("manifest");
  state s(tiny_model());
  const fs::path d = save_checkpoint(dir.path, s.view(8));
  const fs::path man = d / "manifest";
  const std::string good = zf::storage::read_text_file(man);
  auto put = [&](const std::string& bytes) {
    std::ofstream(man, std::ios::trunc | std::ios::binary) << bytes;
  };

  put("{ not a manifest }......");  // 24 bytes: a whole number of words, but no message
  auto msg = error_of([&] { load_checkpoint(d, s.layout); });
  CHECK(contains(msg, "corrupt checkpoint manifest"));
  CHECK(contains(msg, man.string()));

  std::string other = good;  // a well-formed message that is not ours
  const auto at = other.find("zeroflow-checkpoint");
  REQUIRE(at != std::string::npos);
  other.replace(at, 19, "something-elsexxxxx");
  put(other);
  msg = error_of([&] { zf::storage::read_manifest(d); });
  CHECK(contains(msg, man.string()));
  CHECK(contains(msg, "not a zeroflow checkpoint"));

  std::string flipped = good;  // one bit in the body: the manifest's own CRC catches it
  flipped[flipped.size() - 40] ^= 0x10;
  put(flipped);
  msg = error_of([&] { zf::storage::read_manifest(d); });
  CHECK(contains(msg, "corrupt checkpoint manifest"));
  CHECK(contains(msg, "CRC"));

  put(good.substr(0, good.size() / 2));
  msg = error_of([&] { load_checkpoint(d, s.layout); });
  CHECK(contains(msg, "corrupt checkpoint manifest"));

  // restored, it loads again
  put(good);
  CHECK(load_checkpoint(d, s.layout).step == 8);
}
