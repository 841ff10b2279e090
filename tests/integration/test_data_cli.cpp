// `zeroflow data analyze`: the index of a corpus's training samples by difficulty, the same
// bytes for any thread count, readable by storage::metric_index for that corpus and seq_len, and
// a custom metric file of the wrong length refused by name.
#include <doctest/doctest.h>

#include "integration/helpers.hpp"
#include "storage/dataset.hpp"
#include "storage/sample_metrics.hpp"

using zf::testing::slurp;
using zf::testing::temp_dir;
using zf::testing::zeroflow;

TEST_CASE("data analyze: vocab_rarity index of the corpus, independent of the thread count") {
  temp_dir d("data-analyze");
  const std::string common = " --set train.seq_len=64 --set data.data_dir=" ZF_DATA_DIR;
  auto one = zeroflow(
      "data analyze --metric vocab_rarity --threads 1 --out " + (d.path / "a").string() + common,
      d.path);
  REQUIRE_MESSAGE(one.code == 0, one.out);
  auto four = zeroflow(
      "data analyze --metric vocab_rarity --threads 4 --out " + (d.path / "b").string() + common,
      d.path);
  REQUIRE_MESSAGE(four.code == 0, four.out);
  CHECK(one.out.find("samples of 65 tokens") != std::string::npos);
  for (const char* f : {"vocab_rarity.values", "vocab_rarity.order"})
    CHECK(slurp(d.path / "a" / f) == slurp(d.path / "b" / f));
  // read back for the corpus and window it was built for: ascending order, values in range
  const auto shard_path = std::filesystem::path(ZF_DATA_DIR) / "cache";
  std::filesystem::path tok;
  for (auto& e : std::filesystem::directory_iterator(shard_path))
    if (e.path().filename().string().starts_with("moby-dick-") && e.path().extension() == ".tok")
      tok = e.path();
  REQUIRE(!tok.empty());
  const auto shard = zf::storage::token_shard::open(tok);
  const std::size_t train_tokens = zf::storage::dataset(zf::storage::token_shard::open(tok),
                                                        zf::run_config{}.data.val_fraction, 64)
                                       .train_tokens();
  auto idx = zf::storage::metric_index::open(d.path / "a", "vocab_rarity", shard, train_tokens, 64);
  REQUIRE(idx.size() == zf::storage::sample_count(train_tokens, 64));
  for (std::size_t k = 1; k < idx.size(); ++k)
    CHECK(idx.value(idx.order(k - 1)) <= idx.value(idx.order(k)));
  CHECK(idx.value(idx.order(0)) > 0);
  // another window length is another index
  CHECK(zf::testing::contains(zf::testing::error_of([&] {
                                zf::storage::metric_index::open(d.path / "a", "vocab_rarity", shard,
                                                                train_tokens, 32);
                              }),
                              "another corpus"));
}

TEST_CASE(
    "data analyze: a custom metric file of the wrong length or an unknown metric is refused") {
  temp_dir d("data-custom");
  std::ofstream(d.path / "v.txt") << "1\n2\n";
  auto r = zeroflow("data analyze --metric custom --values " + (d.path / "v.txt").string() +
                        " --out " + (d.path / "o").string() + " --set data.data_dir=" ZF_DATA_DIR,
                    d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("v.txt: expected") != std::string::npos);
  CHECK(!std::filesystem::exists(d.path / "o" / "custom.values"));
  r = zeroflow("data analyze --metric loudness --out " + (d.path / "o").string(), d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("expected vocab_rarity or custom") != std::string::npos);
}
