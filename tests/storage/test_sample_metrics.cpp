// Sample metrics (curriculum data analyzer, issue 13): vocab_rarity against a brute-force
// computation, thread-count independence, the order file as the argsort, round trips through the
// index files, and refusal of damaged, foreign and stale files naming them.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/sample_metrics.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::metric_index;
using zf::storage::sample_count;
using zf::storage::token_shard;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

token_shard make_shard(const fs::path& p, const std::vector<int>& ids, uint32_t vocab) {
  zf::storage::write_token_shard(p, ids, vocab);
  return token_shard::open(p);
}

// A deterministic pseudo-random corpus with a skewed unigram distribution (so rarities differ).
std::vector<int> skewed_ids(int n, int vocab) {
  std::vector<int> ids(n);
  uint32_t x = 12345;
  for (auto& id : ids) {
    x = x * 1664525u + 1013904223u;
    const int a = static_cast<int>((x >> 8) % vocab), b = static_cast<int>((x >> 20) % vocab);
    id = std::min(a, b);  // small ids are more frequent
  }
  return ids;
}

// The reference: counts over the train head by std::map, then each window's mean -log p.
std::vector<double> brute_rarity(const std::vector<int>& ids, std::size_t train, int seq_len) {
  std::map<int, double> count;
  for (std::size_t i = 0; i < train; ++i) count[ids[i]] += 1;
  std::vector<double> out;
  for (std::size_t s = 0; s * seq_len + seq_len + 1 <= train; ++s) {
    double sum = 0;
    for (int j = 0; j <= seq_len; ++j) sum -= std::log(count[ids[s * seq_len + j]] / train);
    out.push_back(sum / (seq_len + 1));
  }
  return out;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put_bytes(const fs::path& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

void put_text(const fs::path& p, const std::string& t) {
  put_bytes(p, t);
}

}  // namespace

TEST_CASE("sample metrics: sample_count counts whole windows") {
  CHECK(sample_count(0, 4) == 0);
  CHECK(sample_count(4, 4) == 0);   // needs seq_len + 1 tokens
  CHECK(sample_count(5, 4) == 1);   // [0, 5)
  CHECK(sample_count(20, 4) == 4);  // last window [12, 17); [16, 21) does not fit
  CHECK(sample_count(21, 4) == 5);  // [16, 21) fits exactly
  CHECK(contains(error_of([] { sample_count(10, 0); }), "seq_len 0"));
}

TEST_CASE("sample metrics: vocab_rarity of a hand-computed corpus") {
  temp_dir dir("smet_hand");
  // tokens 0 0 0 1, one window of 4: p(0) = 3/4, p(1) = 1/4
  auto s = make_shard(dir / "a.tok", {0, 0, 0, 1}, 2);
  const auto v = zf::storage::vocab_rarity(s, 4, 3, 1);
  REQUIRE(v.size() == 1);
  CHECK(v[0] == doctest::Approx((-3 * std::log(0.75) - std::log(0.25)) / 4).epsilon(1e-14));
}

TEST_CASE("sample metrics: vocab_rarity against a brute-force computation") {
  temp_dir dir("smet_brute");
  const auto ids = skewed_ids(1003, 37);
  auto s = make_shard(dir / "c.tok", ids, 37);
  // train head shorter than the shard: counts must ignore the tail
  for (int seq_len : {1, 7, 16}) {
    const std::size_t train = 900;
    const auto ref = brute_rarity(ids, train, seq_len);
    const auto got = zf::storage::vocab_rarity(s, train, seq_len, 3);
    REQUIRE(got.size() == sample_count(train, seq_len));
    REQUIRE(got.size() == ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i)
      CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-12));
  }
  CHECK(contains(error_of([&] { zf::storage::vocab_rarity(s, 2000, 8); }), "c.tok"));
}

TEST_CASE("sample metrics: vocab_rarity is identical for any thread count") {
  temp_dir dir("smet_threads");
  const auto ids = skewed_ids(20011, 500);
  auto s = make_shard(dir / "t.tok", ids, 500);
  const auto one = zf::storage::vocab_rarity(s, ids.size(), 32, 1);
  REQUIRE(one.size() == (ids.size() - 1) / 32);
  for (unsigned t : {2u, 4u, 7u, 0u}) {
    const auto many = zf::storage::vocab_rarity(s, ids.size(), 32, t);
    REQUIRE(many.size() == one.size());
    CHECK(std::memcmp(many.data(), one.data(), one.size() * sizeof(double)) == 0);  // bit for bit
  }
}

TEST_CASE("sample metrics: argsort orders by value then id") {
  const std::vector<double> v = {3, 1, 2, 1, -0.5, 2};
  CHECK(zf::storage::argsort_values(v) == std::vector<uint64_t>{4, 1, 3, 2, 5, 0});
}

TEST_CASE("sample metrics: index round trip and the order file is the argsort") {
  temp_dir dir("smet_rt");
  const auto ids = skewed_ids(4001, 60);
  auto s = make_shard(dir / "r.tok", ids, 60);
  const std::size_t train = 3900;
  const int seq_len = 8;
  const auto v = zf::storage::vocab_rarity(s, train, seq_len);
  zf::storage::write_metric_index(dir / "idx", "vocab_rarity", s, train, seq_len, v);
  CHECK(fs::file_size(dir / "idx" / "vocab_rarity.values") == 88 + 8 * v.size());
  CHECK(fs::file_size(dir / "idx" / "vocab_rarity.order") == 88 + 8 * v.size());
  for (const auto& e : fs::directory_iterator(dir / "idx"))  // no temp file left behind
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);

  auto x = metric_index::open(dir / "idx", "vocab_rarity", s, train, seq_len);
  REQUIRE(x.size() == v.size());
  CHECK(x.metric() == "vocab_rarity");
  std::vector<uint64_t> ref(v.size());
  std::iota(ref.begin(), ref.end(), uint64_t{0});
  std::stable_sort(ref.begin(), ref.end(), [&](uint64_t a, uint64_t b) { return v[a] < v[b]; });
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(x.value(i) == v[i]);  // exact: float64 stored as is
    CHECK(x.order(i) == ref[i]);
  }

  // custom values with many ties: the order breaks them by id
  const std::size_t n = v.size();
  std::string text;
  std::vector<double> c(n);
  for (std::size_t i = 0; i < n; ++i) {
    c[i] = static_cast<double>((i * 7) % 5) - 1.5;
    text += fmt::format("{}\n", c[i]);
  }
  put_text(dir / "custom.txt", text);
  CHECK(zf::storage::read_custom_metric(dir / "custom.txt", n) == c);
  zf::storage::write_metric_index(dir / "idx", "custom", s, train, seq_len, c);
  auto y = metric_index::open(dir / "idx", "custom", s, train, seq_len);
  std::iota(ref.begin(), ref.end(), uint64_t{0});
  std::stable_sort(ref.begin(), ref.end(), [&](uint64_t a, uint64_t b) { return c[a] < c[b]; });
  for (std::size_t k = 0; k < n; ++k) CHECK(y.order(k) == ref[k]);
  auto moved = std::move(y);  // the mapping moves with it
  CHECK(moved.value(n - 1) == c[n - 1]);
}

TEST_CASE("sample metrics: damaged index files are refused naming the file") {
  temp_dir dir("smet_bad");
  const auto ids = skewed_ids(801, 40);
  auto s = make_shard(dir / "d.tok", ids, 40);
  const auto v = zf::storage::vocab_rarity(s, 801, 10);
  const auto idx = dir / "idx";
  zf::storage::write_metric_index(idx, "vocab_rarity", s, 801, 10, v);
  const auto values = idx / "vocab_rarity.values", order = idx / "vocab_rarity.order";
  const std::string good_values = file_bytes(values), good_order = file_bytes(order);
  auto open_err = [&] {
    return error_of([&] { metric_index::open(idx, "vocab_rarity", s, 801, 10); });
  };

  std::string b = good_values;
  b[0] = 'X';
  put_bytes(values, b);
  std::string e = open_err();
  CHECK(contains(e, values.string()));
  CHECK(contains(e, "bad magic"));

  b = good_values;
  b[8] = 9;  // version
  put_bytes(values, b);
  e = open_err();
  CHECK(contains(e, values.string()));
  CHECK(contains(e, "version 9"));

  put_bytes(values, good_values.substr(0, good_values.size() - 8));
  e = open_err();
  CHECK(contains(e, values.string()));
  CHECK(contains(e, "truncated"));
  put_bytes(values, good_values.substr(0, 40));
  CHECK(contains(open_err(), "smaller than its 88-byte header"));

  put_bytes(values, good_values);
  put_bytes(order, good_values);  // a values file in place of the order file
  e = open_err();
  CHECK(contains(e, order.string()));
  CHECK(contains(e, "expected 2 (order)"));

  b = good_order;  // swap the first two ids: no longer the argsort
  std::swap_ranges(b.begin() + 88, b.begin() + 96, b.begin() + 96);
  put_bytes(order, b);
  e = open_err();
  CHECK(contains(e, order.string()));
  CHECK(contains(e, "ascending order"));

  put_bytes(order, good_order);
  CHECK_NOTHROW(metric_index::open(idx, "vocab_rarity", s, 801, 10));
  fs::copy_file(values, idx / "custom.values");  // another metric's file under this name
  e = error_of([&] { metric_index::open(idx, "custom", s, 801, 10); });
  CHECK(contains(e, (idx / "custom.values").string()));
  CHECK(contains(e, "holds metric 'vocab_rarity', not 'custom'"));
  e = error_of([&] { metric_index::open(idx, "seqlen", s, 801, 10); });
  CHECK(contains(e, (idx / "seqlen.values").string()));  // missing
}

TEST_CASE("sample metrics: an index built for another corpus is refused") {
  temp_dir dir("smet_stale");
  auto ids = skewed_ids(801, 40);
  auto s = make_shard(dir / "e.tok", ids, 40);
  const auto idx = dir / "idx";
  zf::storage::write_metric_index(idx, "vocab_rarity", s, 800, 10,
                                  zf::storage::vocab_rarity(s, 800, 10));
  const auto values = (idx / "vocab_rarity.values").string();
  // same size, one token changed: only the checksum tells
  ids[400] = (ids[400] + 1) % 40;
  zf::storage::write_token_shard(dir / "e.tok", ids, 40);  // atomic: s keeps its old mapping
  auto reopened = token_shard::open(dir / "e.tok");
  std::string e = error_of([&] { metric_index::open(idx, "vocab_rarity", reopened, 800, 10); });
  CHECK(contains(e, values));
  CHECK(contains(e, "built for another corpus: rebuild it with `zeroflow data analyze`"));
  CHECK(contains(e, "crc32"));

  ids[400] = (ids[400] + 39) % 40;  // back to the original bytes: accepted again
  auto back = make_shard(dir / "e.tok", ids, 40);
  CHECK_NOTHROW(metric_index::open(idx, "vocab_rarity", back, 800, 10));

  e = error_of([&] { metric_index::open(idx, "vocab_rarity", back, 801, 10); });
  CHECK(contains(e, values));
  CHECK(contains(e, "built for another corpus"));
  CHECK(contains(e, "train_tokens 800, now 801"));
  e = error_of([&] { metric_index::open(idx, "vocab_rarity", back, 800, 12); });
  CHECK(contains(e, values));
  CHECK(contains(e, "built for another corpus"));
  CHECK(contains(e, "seq_len 10, now 12"));
}

TEST_CASE("sample metrics: bad custom metric files are refused naming the file and line") {
  temp_dir dir("smet_custom");
  const auto p = dir / "m.txt";
  put_text(p, "1\n2.5\r\n  -3e2 \n");
  CHECK(zf::storage::read_custom_metric(p, 3) == std::vector<double>{1, 2.5, -300});

  std::string e = error_of([&] { zf::storage::read_custom_metric(p, 4); });
  CHECK(contains(e, p.string()));
  CHECK(contains(e, "expected 4 samples"));
  CHECK(contains(e, "got 3"));

  put_text(p, "1\n2\nabc\n");
  e = error_of([&] { zf::storage::read_custom_metric(p, 3); });
  CHECK(contains(e, p.string()));
  CHECK(contains(e, "line 3"));
  CHECK(contains(e, "'abc' is not a number"));

  put_text(p, "1\n2x\n3\n");
  CHECK(contains(error_of([&] { zf::storage::read_custom_metric(p, 3); }), "line 2"));
  put_text(p, "1\n\n3\n");
  CHECK(contains(error_of([&] { zf::storage::read_custom_metric(p, 3); }), "line 2"));

  for (const char* bad : {"inf", "-inf", "nan"}) {
    put_text(p, fmt::format("1\n{}\n", bad));
    e = error_of([&] { zf::storage::read_custom_metric(p, 2); });
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "line 2"));
    CHECK(contains(e, "not a finite number"));
  }
  CHECK(contains(error_of([&] { zf::storage::read_custom_metric(dir / "none.txt", 1); }),
                 "none.txt"));

  // the writer refuses a wrong count or a non-finite value, and a bad metric name
  auto s = make_shard(dir / "f.tok", skewed_ids(101, 10), 10);
  const std::vector<double> three = {1, 2, 3};
  e = error_of([&] { zf::storage::write_metric_index(dir / "i", "custom", s, 101, 10, three); });
  CHECK(contains(e, "3 values, expected 10 samples"));
  std::vector<double> ten(10, 1.0);
  ten[4] = NAN;
  e = error_of([&] { zf::storage::write_metric_index(dir / "i", "custom", s, 101, 10, ten); });
  CHECK(contains(e, "sample 4 is not finite"));
  ten[4] = 1;
  e = error_of([&] { zf::storage::write_metric_index(dir / "i", "Bad/Name", s, 101, 10, ten); });
  CHECK(contains(e, "Bad/Name"));
}
