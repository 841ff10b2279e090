// Dataset: train/validation split, deterministic batches, window bounds, and corpus resolution
// (text -> cached token shard).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/dataset.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::batch;
using zf::storage::dataset;
using zf::storage::token_shard;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

// A shard holding 0, 1, ..., n-1: every token's value is its position, so windows are checkable.
token_shard iota_shard(const temp_dir& dir, int n) {
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  const auto p = dir / fmt::format("iota{}.tok", n);
  zf::storage::write_token_shard(p, ids, static_cast<uint32_t>(n));
  return token_shard::open(p);
}

// Every row of b is a run of consecutive positions; targets are inputs shifted by one. Returns
// the start of each row.
std::vector<int> row_starts(const batch& b) {
  std::vector<int> starts;
  for (int r = 0; r < b.b; ++r) {
    const int* in = b.inputs.data() + std::size_t(r) * b.t;
    const int* tg = b.targets.data() + std::size_t(r) * b.t;
    for (int i = 0; i < b.t; ++i) {
      CHECK(in[i] == in[0] + i);
      CHECK(tg[i] == in[i] + 1);
    }
    starts.push_back(in[0]);
  }
  return starts;
}

zf::tokenizer& gpt2() {
  static zf::tokenizer tok = zf::tokenizer::load_gpt2(fs::path(ZF_DATA_DIR) / "gpt2");
  return tok;
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

}  // namespace

TEST_CASE("dataset: split sizes") {
  temp_dir dir("split");
  dataset d(iota_shard(dir, 2000), 0.1, 16);
  CHECK(d.train_tokens() == 1800);
  CHECK(d.val_tokens() == 200);

  // a tiny val_fraction is raised to one window (seq_len + 1 tokens)
  dataset small(iota_shard(dir, 1000), 0.001, 16);
  CHECK(small.val_tokens() == 17);
  CHECK(small.train_tokens() == 983);
}

TEST_CASE("dataset: fill_train is a pure function of (seed, index) inside the train head") {
  temp_dir dir("train");
  const int n = 2000, t = 16, b = 8;
  dataset d(iota_shard(dir, n), 0.1, t);
  batch x, y, z, w;
  d.fill_train(42, 7, b, x);
  d.fill_train(42, 7, b, y);
  CHECK(x.index == 7);
  CHECK(x.b == b);
  CHECK(x.t == t);
  REQUIRE(x.inputs.size() == std::size_t(b) * t);
  REQUIRE(x.targets.size() == std::size_t(b) * t);
  CHECK(x.inputs == y.inputs);
  CHECK(x.targets == y.targets);
  d.fill_train(42, 8, b, z);
  CHECK(z.inputs != x.inputs);
  d.fill_train(43, 7, b, w);
  CHECK(w.inputs != x.inputs);
  // index is mixed in full 64 bits: indices 2^32 apart differ
  batch hi;
  d.fill_train(42, 7 + (int64_t(1) << 32), b, hi);
  CHECK(hi.inputs != x.inputs);

  // a fresh dataset over the same shard gives the same batch (resume needs nothing but s)
  dataset d2(iota_shard(dir, n), 0.1, t);
  batch again;
  d2.fill_train(42, 7, b, again);
  CHECK(again.inputs == x.inputs);

  // every window of many batches lies in [0, train_tokens): last target < train_tokens
  int min_start = n, max_start = -1;
  for (int64_t i = 0; i < 300; ++i) {
    batch bb;
    d.fill_train(1, i, b, bb);
    for (int s : row_starts(bb)) {
      CHECK(s >= 0);
      CHECK(std::size_t(s + t) < d.train_tokens());  // target of the last position
      min_start = std::min(min_start, s);
      max_start = std::max(max_start, s);
    }
  }
  // 2400 draws over 1783 starts reach close to both ends
  CHECK(min_start < 20);
  CHECK(max_start > int(d.train_tokens()) - t - 1 - 20);
}

TEST_CASE("dataset: fill_val walks consecutive windows of the tail and wraps") {
  temp_dir dir("val");
  const int n = 2000, t = 16, b = 4;
  dataset d(iota_shard(dir, n), 0.1, t);  // tail [1800, 2000): (200 - 1) / 16 = 12 windows
  batch v0, v1, v3;
  d.fill_val(0, b, v0);
  CHECK(v0.index == 0);
  CHECK(row_starts(v0) == std::vector<int>{1800, 1816, 1832, 1848});
  d.fill_val(1, b, v1);
  CHECK(row_starts(v1) == std::vector<int>{1864, 1880, 1896, 1912});
  d.fill_val(3, b, v3);  // windows 12..15 wrap to 0..3
  CHECK(v3.inputs == v0.inputs);
  for (int64_t i = 0; i < 20; ++i) {
    batch v;
    d.fill_val(i, b, v);
    for (int s : row_starts(v)) {
      CHECK(std::size_t(s) >= d.train_tokens());
      CHECK(s + t < n);
    }
  }
}

TEST_CASE("dataset: fill_val with no validation split never returns train windows") {
  // Regression test (bug fixed): (storage/dataset.cpp, dataset::fill_val): with data.val_fraction =
  // 0 (allowed by the config, range 0..0.5) val_tokens() is 0, `(val_tokens() - 1) / t_` wraps to a
  // huge window count and every start is clamped to shard.size() - t - 1, i.e. the last window of
  // the TRAIN head. The trainer still evaluates every eval_every steps, so it reports a "val loss"
  // measured on training data. Fix: refuse in fill_val (zf::error "no validation split:
  // data.val_fraction is 0") or have validate()/the trainer skip evaluation when val_fraction == 0.
  temp_dir dir("noval");
  const int n = 500, t = 16;
  dataset d(iota_shard(dir, n), 0.0, t);
  CHECK(d.val_tokens() == 0);
  CHECK(d.train_tokens() == std::size_t(n));
  bool refused = false;
  batch v;
  try {
    d.fill_val(0, 2, v);
  } catch (const zf::error&) {
    refused = true;
  }
  if (!refused)
    for (int s : row_starts(v)) CHECK(std::size_t(s) >= d.train_tokens());
}

TEST_CASE("dataset: a corpus too small for seq_len is refused") {
  temp_dir dir("small");
  auto msg = error_of([&] { dataset d(iota_shard(dir, 30), 0.1, 16); });
  CHECK(contains(msg, "iota30.tok"));
  CHECK(contains(msg, "30 tokens"));
  CHECK(contains(msg, "too few"));
  // the smallest corpus that works: val 17 + seq_len 16 + 2
  dataset ok(iota_shard(dir, 35), 0.1, 16);
  CHECK(ok.train_tokens() == 18);
  batch b;
  ok.fill_train(0, 0, 1, b);
  CHECK(row_starts(b)[0] + 16 < 18);
}

TEST_CASE("dataset: prepare_corpus tokenizes a text file once into data_dir/cache") {
  temp_dir dir("prep");
  const fs::path data_dir = dir / "data";
  const fs::path txt = dir / "story.txt";
  const std::string text = "Call me Ishmael. Some years ago - never mind how long precisely.\n";
  write_text(txt, text);

  const fs::path cache = zf::storage::prepare_corpus(txt.string(), data_dir, gpt2());
  CHECK(cache.parent_path() == data_dir / "cache");
  CHECK(cache.extension() == ".tok");
  CHECK(cache.filename().string().starts_with(fmt::format("story-{}-", text.size())));
  REQUIRE(fs::exists(cache));
  {
    auto s = token_shard::open(cache);
    CHECK(s.vocab_size() == 50257u);
    std::vector<int> ids(s.size());
    s.read(0, ids.size(), ids.data());
    CHECK(ids == gpt2().encode(text));
    CHECK(gpt2().decode(ids) == text);
  }

  // Second call: same path, the cache is not rewritten (mtime moved to the past stays there).
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(cache, old);
  const fs::path again = zf::storage::prepare_corpus(txt.string(), data_dir, gpt2());
  CHECK(again == cache);
  CHECK(fs::last_write_time(cache) == old);

  // A damaged cache is rebuilt rather than trusted.
  fs::resize_file(cache, fs::file_size(cache) - 1);
  const fs::path rebuilt = zf::storage::prepare_corpus(txt.string(), data_dir, gpt2());
  CHECK(rebuilt == cache);
  CHECK(token_shard::open(rebuilt).size() == gpt2().encode(text).size());

  // Different content gets a different cache file.
  write_text(txt, text + "More.\n");
  const fs::path other = zf::storage::prepare_corpus(txt.string(), data_dir, gpt2());
  CHECK(other != cache);
  CHECK(other.parent_path() == data_dir / "cache");

  // A .tok corpus is used as it is (validated).
  CHECK(zf::storage::prepare_corpus(cache.string(), data_dir, gpt2()) == cache);
}

TEST_CASE("dataset: prepare_corpus names a missing or empty corpus") {
  temp_dir dir("missing");
  const fs::path data_dir = dir / "data";
  const fs::path txt = dir / "nowhere.txt";
  auto msg = error_of([&] { zf::storage::prepare_corpus(txt.string(), data_dir, gpt2()); });
  CHECK(contains(msg, txt.string()));
  CHECK(contains(msg, "data.corpus"));
  CHECK_FALSE(fs::exists(data_dir / "cache"));

  // the embedded default points at scripts/setup
  msg = error_of([&] { zf::storage::prepare_corpus("moby-dick", data_dir, gpt2()); });
  CHECK(contains(msg, (data_dir / "moby-dick.txt").string()));
  CHECK(contains(msg, "scripts/setup"));

  const fs::path tok = dir / "nowhere.tok";
  msg = error_of([&] { zf::storage::prepare_corpus(tok.string(), data_dir, gpt2()); });
  CHECK(contains(msg, tok.string()));

  const fs::path empty = dir / "empty.txt";
  write_text(empty, "");
  msg = error_of([&] { zf::storage::prepare_corpus(empty.string(), data_dir, gpt2()); });
  CHECK(contains(msg, empty.string()));
  CHECK(contains(msg, "empty"));
}

// Issue 9: a binary file as a training corpus trained without a word.
TEST_CASE("dataset: prepare_corpus refuses a binary corpus and warns about a few bad bytes") {
  temp_dir dir("binary");
  const fs::path data_dir = dir / "data";
  std::string binary(8192, '\0');
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = char((i * 2654435761u) >> 13);
  const fs::path bin = dir / "image.txt";
  write_text(bin, binary);
  std::vector<std::string> warnings;
  zf::storage::corpus_checks checks;
  checks.warn = [&](const std::string& w) { warnings.push_back(w); };
  auto msg =
      error_of([&] { zf::storage::prepare_corpus(bin.string(), data_dir, gpt2(), "", checks); });
  CHECK_MESSAGE(contains(msg, "corpus " + bin.string() + ": "), msg);
  CHECK_MESSAGE(contains(msg, "% of its bytes are not valid UTF-8"), msg);
  CHECK_MESSAGE(contains(msg, "data.max_invalid_utf8 = 1"), msg);
  CHECK_FALSE(fs::exists(data_dir / "cache"));  // nothing tokenized, nothing cached

  // Forced through the key: tokenized, with the warning.
  checks.max_invalid_utf8 = 1;
  CHECK(fs::exists(zf::storage::prepare_corpus(bin.string(), data_dir, gpt2(), "", checks)));
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], bin.string()));

  // A text with a few bad bytes (0.1%): tokenized, with a warning naming it and the share.
  std::string text;
  while (text.size() < 3000) text += "Call me Ishmael. ";
  text[100] = '\xFF';
  text[200] = '\0';
  text[300] = '\xC3';
  const fs::path few = dir / "few.txt";
  write_text(few, text);
  warnings.clear();
  checks.max_invalid_utf8 = 0.01;
  const fs::path shard = zf::storage::prepare_corpus(few.string(), data_dir, gpt2(), "", checks);
  CHECK(token_shard::open(shard).size() == gpt2().encode(text).size());
  REQUIRE(warnings.size() == 1);
  CHECK_MESSAGE(contains(warnings[0], "corpus " + few.string() + ": 0.0997% of its bytes"),
                warnings[0]);
  CHECK_MESSAGE(contains(warnings[0], "2 invalid, 1 NUL, of 3009"), warnings[0]);
}
