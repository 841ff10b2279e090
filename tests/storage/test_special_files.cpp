// A FIFO (or a folder) where a checkpoint's `latest`, manifest or rank file, a safetensors file or
// a token shard should be: every reader refuses it at once, naming the path and what it is,
// instead of blocking forever on open (issue 9). Each open below would hang without the check.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/model/layout.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "storage/safetensors.hpp"
#include "storage/token_shard.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

void make_fifo(const fs::path& p) {
  fs::remove_all(p);
  REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
}

// A one-step checkpoint of a tiny model under root.
fs::path small_checkpoint(const fs::path& root, zf::param_layout& L, std::vector<float>& p) {
  zf::model_config m;
  m.n_layer = 1, m.n_embd = 16, m.n_head = 2, m.n_positions = 8, m.vocab_size = 32;
  L = zf::layout_of(m);
  p.assign(L.total, 0.5f);
  st::checkpoint_view v;
  v.step = 1;
  v.layout = &L;
  v.params = p.data();
  return st::save_checkpoint(root, v);
}

}  // namespace

TEST_CASE("special files: a FIFO in place of a checkpoint file is refused by name, not waited on") {
  zf::param_layout L;
  std::vector<float> p;
  {
    temp_dir d("fifo_latest");
    small_checkpoint(d.path, L, p);
    make_fifo(d.path / "latest");
    const auto msg = error_of([&] { st::read_manifest(d.path); });
    CHECK(contains(msg, (d.path / "latest").string()));
    CHECK(contains(msg, "is a FIFO, not a regular file"));
  }
  {
    temp_dir d("fifo_manifest");
    const fs::path step = small_checkpoint(d.path, L, p);
    make_fifo(step / "manifest");
    const auto msg = error_of([&] { st::read_manifest(step); });
    CHECK(contains(msg, (step / "manifest").string()));
    CHECK(contains(msg, "FIFO"));
  }
  {
    temp_dir d("fifo_rank");
    const fs::path step = small_checkpoint(d.path, L, p);
    make_fifo(step / "rank-00000.bin");
    auto msg = error_of([&] { st::load_checkpoint(step, L); });
    CHECK(contains(msg, (step / "rank-00000.bin").string()));
    CHECK(contains(msg, "FIFO"));
    const auto report = st::verify_checkpoint(step);  // `zeroflow ckpt verify`
    CHECK_FALSE(report.ok);
    bool named = false;
    for (const auto& pr : report.problems)
      named = named || contains(pr, "rank-00000.bin is not a regular file");
    CHECK(named);
  }
  {
    temp_dir d("dir_rank");  // a folder where a file should be
    const fs::path step = small_checkpoint(d.path, L, p);
    fs::remove(step / "rank-00000.bin");
    fs::create_directory(step / "rank-00000.bin");
    CHECK(contains(error_of([&] { st::load_checkpoint(step, L); }), "is a folder"));
  }
}

TEST_CASE("special files: model and data files that are FIFOs are refused by name") {
  temp_dir d("fifo_data");
  make_fifo(d.path / "model.safetensors");
  auto msg = error_of([&] { st::safetensors_file::open(d.path / "model.safetensors"); });
  CHECK(contains(msg, "not a regular file"));
  make_fifo(d.path / "corpus.tok");
  msg = error_of([&] { st::token_shard::open(d.path / "corpus.tok"); });
  CHECK(contains(msg, (d.path / "corpus.tok").string()));
  CHECK(contains(msg, "FIFO"));
  make_fifo(d.path / "text.txt");
  CHECK(contains(error_of([&] { st::read_text_file(d.path / "text.txt"); }), "FIFO"));
}

TEST_CASE(
    "special files: a latest full of binary garbage is named, and what it holds shown safely") {
  zf::param_layout L;
  std::vector<float> p;
  temp_dir d("garbage_latest");
  small_checkpoint(d.path, L, p);
  {
    std::ofstream out(d.path / "latest", std::ios::binary);
    out << std::string("\x00\x01step\xff", 8) << std::string(100, 'A');
  }
  const auto msg = error_of([&] { st::read_manifest(d.path); });
  CHECK(contains(msg, (d.path / "latest").string()));
  CHECK(contains(msg, "should name a step folder"));
  CHECK(contains(msg, "\\x00\\x01step\\xff"));  // the NUL does not cut the message
  CHECK(contains(msg, "(108 bytes)"));
}
