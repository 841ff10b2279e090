// Data blending (storage/blend, data.sources): shares by weight, the per-source train/validation
// split kept apart, the blend's own split falling exactly between its parts, determinism by
// blend_seed, the cache (reuse, rebuild), the refusals; and the fetched corpora's names.
// Sources are synthetic shards whose every token says where it came from: source s (1-based) at
// position p holds s * 1000000 + p.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/blend.hpp"
#include "storage/dataset.hpp"
#include "storage/fs_util.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::data_source;
using zf::storage::blend_chunk;
using zf::storage::token_shard;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

constexpr int source_stride = 1000000;
constexpr uint32_t vocab = 8 * source_stride;

zf::tokenizer& gpt2() {
  static zf::tokenizer tok = zf::tokenizer::load_gpt2(fs::path(ZF_DATA_DIR) / "gpt2");
  return tok;
}

// Source s (1-based) of n tokens: s * 1000000 + position.
fs::path write_source(const fs::path& dir, int s, std::size_t n, int salt = 0) {
  std::vector<int> ids(n);
  for (std::size_t p = 0; p < n; ++p) ids[p] = s * source_stride + int(p) + salt;
  const fs::path path = dir / fmt::format("src{}.tok", s);
  zf::storage::write_token_shard(path, ids, vocab);
  return path;
}

std::vector<int> tokens_of(const fs::path& p) {
  const token_shard t = token_shard::open(p);
  std::vector<int> ids(t.size());
  t.read(0, t.size(), ids.data());
  return ids;
}

fs::path blend(const std::vector<data_source>& s, double vf, int64_t seed, const fs::path& dd) {
  return zf::storage::prepare_blend(s, vf, seed, dd, gpt2());
}

nlohmann::json sidecar_of(const fs::path& blend_path) {
  fs::path side = blend_path;
  side.replace_extension(".json");
  return nlohmann::json::parse(zf::storage::read_text_file(side));
}

std::size_t head_of(std::size_t n, double vf) {
  return n - static_cast<std::size_t>(n * vf);
}

}  // namespace

TEST_CASE("blend: each part gives every source its weight's share, in whole chunks") {
  temp_dir dir("blend_share");
  const std::size_t sizes[] = {60000, 40000, 30000};
  const double weights[] = {3, 1, 1};
  std::vector<data_source> src;
  for (int s = 0; s < 3; ++s)
    src.push_back({write_source(dir.path, s + 1, sizes[s]).string(), weights[s]});
  const double vf = 0.1;
  const fs::path b = blend(src, vf, 7, dir / "data");
  CHECK(b.parent_path() == dir / "data" / "cache");
  CHECK(b.filename().string().starts_with("blend-"));
  const std::vector<int> ids = tokens_of(b);
  const std::size_t n = 130000, n_val = static_cast<std::size_t>(n * vf);
  REQUIRE(ids.size() == n);  // the sources' tokens, redistributed, not grown

  const std::size_t part_size[] = {n - n_val, n_val};
  std::size_t counts[2][3] = {};
  for (std::size_t i = 0; i < n; ++i) ++counts[i < n - n_val ? 0 : 1][ids[i] / source_stride - 1];
  const nlohmann::json side = sidecar_of(b);
  for (int part = 0; part < 2; ++part)
    for (int s = 0; s < 3; ++s) {
      CAPTURE(part);
      CAPTURE(s);
      const double exact = double(part_size[part]) * weights[s] / 5;
      CHECK(std::abs(double(counts[part][s]) - exact) < 1.0);
      const auto& js = side["sources"][s][part == 0 ? "train" : "val"];
      CHECK(js["tokens"] == counts[part][s]);
      // unique: the source's whole chunks of the part, or fewer when subsampled
      const std::size_t own = part == 0 ? head_of(sizes[s], vf) : sizes[s] - head_of(sizes[s], vf);
      const std::size_t whole = own / blend_chunk * blend_chunk;
      CHECK(js["unique_tokens"] == std::min(counts[part][s], whole));
      CHECK(js["repeats"].get<double>() ==
            doctest::Approx(double(counts[part][s]) / double(std::min(counts[part][s], whole))));
    }
  // source 1 (weight 3/5 of 117000 > its 54000-token head) is upsampled, the others subsampled
  CHECK(side["sources"][0]["train"]["repeats"].get<double>() > 1.3);
  CHECK(side["sources"][1]["train"]["repeats"] == 1.0);
  CHECK(side["sources"][0]["path"] == src[0].path);
  CHECK(side["sources"][0]["weight"] == 3.0);
  CHECK(side["train_tokens"] == n - n_val);
  CHECK(side["val_tokens"] == n_val);
}

TEST_CASE("blend: validation tails stay out of the train part and the split falls between parts") {
  temp_dir dir("blend_split");
  const std::size_t sizes[] = {50000, 23000, 41000};
  std::vector<data_source> src;
  for (int s = 0; s < 3; ++s) src.push_back({write_source(dir.path, s + 1, sizes[s]).string(), 1});
  for (double vf : {0.05, 0.1, 0.0}) {
    CAPTURE(vf);
    const fs::path b = blend(src, vf, 11, dir / "data");
    const std::vector<int> ids = tokens_of(b);
    const std::size_t n = ids.size();
    REQUIRE(n == 114000);
    // storage::dataset splits the blend exactly where its validation part begins
    const zf::storage::dataset ds(token_shard::open(b), vf, 64);
    const std::size_t train_end = n - static_cast<std::size_t>(n * vf);
    CHECK(ds.train_tokens() == train_end);
    std::size_t runs = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const int s = ids[i] / source_stride - 1;
      const std::size_t pos = std::size_t(ids[i] % source_stride);
      const std::size_t head = head_of(sizes[s], vf);
      const bool train = i < train_end;
      if (train != (pos < head)) {
        FAIL_CHECK("token " << i << " of source " << s << " at " << pos << " is in the wrong part");
        break;
      }
      // a new run of consecutive positions starts a chunk of its part, and no run reaches into
      // a part's dropped partial chunk
      const std::size_t part_begin = train ? 0 : head;
      const std::size_t part_end = train ? head : sizes[s];
      CHECK_MESSAGE(pos < part_begin + (part_end - part_begin) / blend_chunk * blend_chunk,
                    "token ", i);
      if (i == 0 || ids[i] != ids[i - 1] + 1) {
        ++runs;
        if ((pos - part_begin) % blend_chunk != 0) {
          FAIL_CHECK("token " << i << " starts a run inside a chunk");
          break;
        }
      }
    }
    CHECK(runs > 50);  // interleaved, not one source after another
  }
}

TEST_CASE("blend: the same bytes for the same inputs, other bytes for another seed") {
  temp_dir dir("blend_determinism");
  std::vector<data_source> src = {{write_source(dir.path, 1, 30000).string(), 2},
                                  {write_source(dir.path, 2, 25000).string(), 1}};
  const fs::path a = blend(src, 0.05, 42, dir / "a");
  const fs::path b = blend(src, 0.05, 42, dir / "b");  // built afresh in another folder
  CHECK(a.filename() == b.filename());
  const std::vector<int> ta = tokens_of(a), tb = tokens_of(b);
  CHECK(ta == tb);
  // pinned: a change to the shuffle, the draw or the quotas changes every blend users have
  CHECK(zf::storage::crc32_of(ta.data(), ta.size() * sizeof(int)) == 2467849359u);
  const fs::path c = blend(src, 0.05, 43, dir / "a");
  CHECK(c.filename() != a.filename());
  const std::vector<int> tc = tokens_of(c);
  CHECK(tc != ta);
  std::vector<int> sa = ta, sc = tc;  // another order of the same shares
  std::size_t ones_a = 0, ones_c = 0;
  for (int t : sa) ones_a += t / source_stride == 1;
  for (int t : sc) ones_c += t / source_stride == 1;
  CHECK(ones_a == ones_c);
}

TEST_CASE("blend: a cached blend is reused, and rebuilt when a source or a weight changes") {
  temp_dir dir("blend_cache");
  const fs::path s1 = write_source(dir.path, 1, 20000), s2 = write_source(dir.path, 2, 20000);
  std::vector<data_source> src = {{s1.string(), 1}, {s2.string(), 1}};
  const fs::path dd = dir / "data";
  const fs::path first = blend(src, 0.1, 1, dd);
  const auto written = fs::last_write_time(first);
  fs::path side = first;
  side.replace_extension(".json");
  fs::remove(side);
  CHECK(blend(src, 0.1, 1, dd) == first);
  CHECK(fs::last_write_time(first) == written);  // not rewritten
  CHECK(fs::exists(side));                       // the sidecar is written again

  // a damaged blend is rebuilt in place
  fs::resize_file(first, fs::file_size(first) - 8);
  CHECK(blend(src, 0.1, 1, dd) == first);
  CHECK(tokens_of(first).size() == 40000);

  // a source with new content (same size): another blend, holding the new tokens
  write_source(dir.path, 1, 20000, /*salt=*/500000);
  const fs::path changed = blend(src, 0.1, 1, dd);
  CHECK(changed != first);
  bool salted = false;
  for (int t : tokens_of(changed)) salted |= t / source_stride == 1 && t % source_stride >= 500000;
  CHECK(salted);
  // another weight: another blend
  src[1].weight = 2;
  CHECK(blend(src, 0.1, 1, dd) != changed);
}

TEST_CASE("blend: refusals name data.sources and the source") {
  temp_dir dir("blend_errors");
  const fs::path ok = write_source(dir.path, 1, 20000);
  const fs::path dd = dir / "data";
  auto msg = error_of([&] { blend({}, 0.1, 1, dd); });
  CHECK(contains(msg, "data.sources: expected at least one source to blend, got none"));

  const fs::path missing = dir / "nowhere.tok";
  msg = error_of([&] { blend({{ok.string(), 1}, {missing.string(), 1}}, 0.1, 1, dd); });
  CHECK(contains(msg, fmt::format("data.sources[1] (\"{}\")", missing.string())));
  CHECK(contains(msg, missing.string() + ""));
  msg = error_of([&] { blend({{"sotu", 1}}, 0.1, 1, dd); });
  CHECK(contains(msg, "data.sources[0] (\"sotu\")"));
  CHECK(contains(msg, (dd / "sotu.txt").string()));
  CHECK(contains(msg, "scripts/setup"));

  msg = error_of([&] { blend({{ok.string(), 1}, {ok.string(), 0}}, 0.1, 1, dd); });
  CHECK(contains(msg, fmt::format("data.sources[1] (\"{}\"): expected a finite weight > 0, got 0",
                                  ok.string())));
  msg = error_of([&] { blend({{ok.string(), std::nan("")}}, 0.1, 1, dd); });
  CHECK(contains(msg, "expected a finite weight > 0, got nan"));

  // 2000 tokens at val_fraction 0.1: a 200-token validation tail, less than one chunk
  const fs::path small = write_source(dir.path, 2, 2000);
  msg = error_of([&] { blend({{ok.string(), 1}, {small.string(), 1}}, 0.1, 1, dd); });
  CHECK(contains(msg, fmt::format("data.sources[1] (\"{}\"): its validation tail has 200 tokens "
                                  "(data.val_fraction = 0.1), fewer than one chunk of 1024",
                                  small.string())));
  const fs::path tiny = write_source(dir.path, 3, 1000);
  msg = error_of([&] { blend({{tiny.string(), 1}}, 0.0, 1, dd); });
  CHECK(contains(msg, "its train head has 1000 tokens"));

  const fs::path other = dir / "other_vocab.tok";
  std::vector<int> ids(5000, 1);
  zf::storage::write_token_shard(other, ids, 50257);
  msg = error_of([&] { blend({{ok.string(), 1}, {other.string(), 1}}, 0.1, 1, dd); });
  CHECK(contains(msg, "a vocabulary of 50257"));
  CHECK(contains(msg, "a blend needs one tokenizer"));
  CHECK_FALSE(fs::exists(dd / "cache"));  // nothing written by a refused blend
}

TEST_CASE("blend: prepare_data blends data.sources, else prepares data.corpus") {
  temp_dir dir("blend_prepare_data");
  zf::data_config d;
  d.corpus = write_source(dir.path, 1, 25000).string();
  const fs::path dd = dir / "data";
  CHECK(zf::storage::prepare_data(d, dd, gpt2()) == fs::path(d.corpus));
  d.sources = {{d.corpus, 1}, {write_source(dir.path, 2, 30000).string(), 3}};
  d.blend_seed = 5;
  const fs::path b = zf::storage::prepare_data(d, dd, gpt2());
  CHECK(b == blend(d.sources, d.val_fraction, 5, dd));
  CHECK(b.filename().string().starts_with("blend-"));
}

TEST_CASE("blend: kjv-bible and sotu resolve to data_dir like moby-dick") {
  temp_dir dir("blend_names");
  const fs::path dd = dir / "data";
  for (const std::string name : {"kjv-bible", "sotu"}) {
    CAPTURE(name);
    auto msg = error_of([&] { zf::storage::prepare_corpus(name, dd, gpt2()); });
    CHECK(contains(msg, "data.corpus: cannot read " + (dd / (name + ".txt")).string()));
    CHECK(contains(msg, "run scripts/setup"));
    fs::create_directories(dd);
    std::ofstream(dd / (name + ".txt")) << "In the beginning was the word. " << name << "\n";
    const fs::path tok = zf::storage::prepare_corpus(name, dd, gpt2());
    CHECK(tok.parent_path() == dd / "cache");
    CHECK(tok.filename().string().starts_with(name + "-"));
    CHECK(token_shard::open(tok).size() > 5);
  }
}
