// Token shards: round trip in both id widths, and refusal of damaged or foreign files.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::token_shard;
using zf::storage::write_token_shard;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put_bytes(const fs::path& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

std::vector<int> all_ids(const token_shard& s) {
  std::vector<int> out(s.size());
  if (!out.empty()) s.read(0, out.size(), out.data());
  return out;
}

}  // namespace

TEST_CASE("token_shard: uint16 round trip") {
  temp_dir dir("u16");
  const auto p = dir / "a.tok";
  std::vector<int> ids;
  for (int i = 0; i < 1000; ++i) ids.push_back((i * 7919) % 50257);
  ids.push_back(0);
  ids.push_back(50256);
  write_token_shard(p, ids, 50257);
  CHECK(fs::file_size(p) == 32 + 2 * ids.size());  // 2 bytes per id
  auto s = token_shard::open(p);
  CHECK(s.size() == ids.size());
  CHECK(s.vocab_size() == 50257u);
  CHECK(s.path() == p);
  CHECK(all_ids(s) == ids);
  CHECK(s[3] == ids[3]);
  std::vector<int> part(5);
  s.read(10, 5, part.data());
  CHECK(part == std::vector<int>(ids.begin() + 10, ids.begin() + 15));
  auto msg = error_of([&] { s.read(ids.size() - 2, 3, part.data()); });
  CHECK(contains(msg, "past its"));

  // vocab exactly 65536 still fits 16 bits (largest id 65535)
  const auto p2 = dir / "edge.tok";
  write_token_shard(p2, std::vector<int>{65535, 0, 1}, 65536);
  CHECK(fs::file_size(p2) == 32 + 2 * 3);
  auto e = token_shard::open(p2);
  CHECK(all_ids(e) == std::vector<int>{65535, 0, 1});

  // moving keeps the mapping valid
  token_shard moved = std::move(s);
  CHECK(moved.size() == ids.size());
  CHECK(moved[1000] == 0);
  CHECK(moved[1001] == 50256);
}

TEST_CASE("token_shard: uint32 round trip for a vocabulary above 65536") {
  temp_dir dir("u32");
  const auto p = dir / "big.tok";
  const std::vector<int> ids = {0, 65535, 65536, 70000, 99999, 12345};
  write_token_shard(p, ids, 100000);
  CHECK(fs::file_size(p) == 32 + 4 * ids.size());  // 4 bytes per id
  auto s = token_shard::open(p);
  CHECK(s.vocab_size() == 100000u);
  CHECK(all_ids(s) == ids);
  CHECK(s[3] == 70000);

  // an empty shard is valid
  const auto e = dir / "empty.tok";
  write_token_shard(e, std::vector<int>{}, 10);
  CHECK(token_shard::open(e).size() == 0);
}

TEST_CASE("token_shard: a truncated file names the file and 'truncated'") {
  temp_dir dir("trunc");
  const auto p = dir / "cut.tok";
  write_token_shard(p, std::vector<int>{1, 2, 3, 4, 5, 6}, 100);
  auto bytes = file_bytes(p);
  put_bytes(p, bytes.substr(0, bytes.size() - 3));  // chop the tail
  auto msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "truncated"));

  put_bytes(p, bytes.substr(0, 20));  // shorter than the header
  msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "truncated"));

  put_bytes(p, bytes + "xy");  // padded
  msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "padded"));
}

TEST_CASE("token_shard: a header count that overflows the size check is refused") {
  // Regression test (bug fixed): (storage/token_shard.cpp, token_shard::open, the `len !=
  // sizeof(header) + h.count * elem` check): the product wraps in 64 bits, so a 32-byte file whose
  // header claims 2^63 uint16 tokens (2^63 * 2 == 0 mod 2^64) passes validation and size() reports
  // 2^63; any read then runs past the mapping. Fix: check `h.count > (len - sizeof(header)) / elem`
  // (or `(len - sizeof(header)) % elem != 0 || (len - sizeof(header)) / elem != h.count`).
  temp_dir dir("overflow");
  const auto p = dir / "evil.tok";
  write_token_shard(p, std::vector<int>{}, 10);
  auto bytes = file_bytes(p);
  REQUIRE(bytes.size() == 32);
  const uint64_t huge = uint64_t(1) << 63;
  std::memcpy(bytes.data() + 16, &huge, 8);
  put_bytes(p, bytes);
  std::string msg;
  try {
    auto s = token_shard::open(p);
    msg = fmt::format("opened with size {}", s.size());
  } catch (const zf::error& e) {
    msg = e.what();
  }
  INFO(msg);
  CHECK(contains(msg, "truncated"));
}

TEST_CASE("token_shard: bad magic, bad version, unknown dtype") {
  temp_dir dir("magic");
  const auto p = dir / "x.tok";
  write_token_shard(p, std::vector<int>{1, 2, 3}, 100);
  const auto good = file_bytes(p);

  auto b = good;
  b[0] = 'Y';
  put_bytes(p, b);
  auto msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "bad magic"));

  b = good;
  b[8] = 2;  // version
  put_bytes(p, b);
  msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, "version 2"));

  b = good;
  b[12] = 3;  // dtype
  put_bytes(p, b);
  msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, "dtype 3"));

  // a text file is not a shard
  put_bytes(p, std::string(64, 'a'));
  msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, "bad magic"));
}

TEST_CASE("token_shard: a missing file is named") {
  temp_dir dir("missing");
  const auto p = dir / "nope.tok";
  auto msg = error_of([&] { (void)token_shard::open(p); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "cannot open"));
}

TEST_CASE("token_shard: ids outside the vocabulary are refused and nothing is written") {
  temp_dir dir("range");
  const auto p = dir / "bad.tok";
  auto msg = error_of([&] { write_token_shard(p, std::vector<int>{1, 2, 100, 3}, 100); });
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, "id 100 at 2"));
  CHECK_FALSE(fs::exists(p));
  CHECK_FALSE(fs::exists(dir / "bad.tok.tmp"));
  msg = error_of([&] { write_token_shard(p, std::vector<int>{-1}, 100); });
  CHECK(contains(msg, "id -1"));
  CHECK_FALSE(fs::exists(p));
  // 65536 does not fit a 65536-token vocabulary
  msg = error_of([&] { write_token_shard(p, std::vector<int>{65536}, 65536); });
  CHECK(contains(msg, "outside vocab 65536"));
}

TEST_CASE("token_shard: write is atomic and replaces an existing shard") {
  temp_dir dir("atomic");
  const auto p = dir / "c.tok";
  write_token_shard(p, std::vector<int>{1, 2, 3}, 10);
  CHECK_FALSE(fs::exists(dir / "c.tok.tmp"));
  {
    auto s = token_shard::open(p);  // an open mapping survives the replacement below
    write_token_shard(p, std::vector<int>{9, 8, 7, 6}, 10);
    CHECK(all_ids(s) == std::vector<int>{1, 2, 3});
  }
  CHECK(all_ids(token_shard::open(p)) == std::vector<int>{9, 8, 7, 6});
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path().filename() == "c.tok");
    ++entries;
  }
  CHECK(entries == 1);
}
