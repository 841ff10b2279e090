// A sharded corpus: data.corpus naming a folder trains on its .txt and .tok files in name order,
// concatenated into one cached shard (storage/dataset prepare_corpus).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/dataset.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::token_shard;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

zf::tokenizer& gpt2() {
  static zf::tokenizer tok = zf::tokenizer::load_gpt2(fs::path(ZF_DATA_DIR) / "gpt2");
  return tok;
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

std::vector<int> ids_of(const fs::path& shard) {
  const auto s = token_shard::open(shard);
  std::vector<int> ids(s.size());
  s.read(0, ids.size(), ids.data());
  return ids;
}

}  // namespace

TEST_CASE("corpus dir: a folder's .txt and .tok files, in name order, make one shard") {
  temp_dir dir("corpus-dir");
  const fs::path shards = dir / "shards", data_dir = dir / "data";
  fs::create_directories(shards);
  write_text(shards / "b.txt", "The second part, a text file.\n");
  write_text(shards / "a.txt", "The first part.\n");
  const std::vector<int> tail = {11, 12, 13, 50256};
  zf::storage::write_token_shard(shards / "c.tok", tail, 50257);
  write_text(shards / "notes.md", "not a corpus file");  // ignored

  const fs::path cache = zf::storage::prepare_corpus(shards.string(), data_dir, gpt2());
  CHECK(cache.parent_path() == data_dir / "cache");
  std::vector<int> want = gpt2().encode("The first part.\n");
  for (int id : gpt2().encode("The second part, a text file.\n")) want.push_back(id);
  want.insert(want.end(), tail.begin(), tail.end());
  CHECK(ids_of(cache) == want);

  // Cached: the second call reuses it; a changed part gives another shard.
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(cache, old);
  CHECK(zf::storage::prepare_corpus(shards.string(), data_dir, gpt2()) == cache);
  CHECK(fs::last_write_time(cache) == old);
  write_text(shards / "a.txt", "The first part, edited.\n");
  const fs::path other = zf::storage::prepare_corpus(shards.string(), data_dir, gpt2());
  CHECK(other != cache);
  CHECK(ids_of(other).size() > want.size());
}

TEST_CASE("corpus dir: an empty folder or parts of different vocabularies are refused") {
  temp_dir dir("corpus-dir-bad");
  const fs::path shards = dir / "shards", data_dir = dir / "data";
  fs::create_directories(shards);
  CHECK(error_of([&] { zf::storage::prepare_corpus(shards.string(), data_dir, gpt2()); }) ==
        "data.corpus: " + shards.string() + " holds no .txt or .tok file");
  zf::storage::write_token_shard(shards / "a.tok", std::vector<int>{1, 2, 3}, 50257);
  zf::storage::write_token_shard(shards / "b.tok", std::vector<int>{1, 2, 3}, 1000);
  const auto msg =
      error_of([&] { zf::storage::prepare_corpus(shards.string(), data_dir, gpt2()); });
  CHECK(msg.find("b.tok has ids for a vocabulary of 1000") != std::string::npos);
}
