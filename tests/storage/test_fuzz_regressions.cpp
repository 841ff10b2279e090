// Inputs the fuzzers (fuzz/, scripts/fuzz) found that storage/ mishandled, each reduced to the
// smallest case that shows it, so the fix stays.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "storage/layout_fixture.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

// Cap'n Proto pointers by hand (the generated manifest.capnp.h is private to zf_storage).
// Offsets are in words from the end of the pointer's own word.
uint64_t struct_ptr(int32_t offset, uint16_t data_words, uint16_t ptrs) {
  return (uint64_t(uint32_t(offset)) << 2) | (uint64_t(data_words) << 32) | (uint64_t(ptrs) << 48);
}
// size: 2 bytes, 7 composite (count: words after the tag)
uint64_t list_ptr(int32_t offset, unsigned size, uint32_t count) {
  return 1 | (uint64_t(uint32_t(offset)) << 2) | (uint64_t(size) << 32) | (uint64_t(count) << 35);
}

// A one-segment flat array: the segment table, then the words.
std::string flat(const std::vector<uint64_t>& seg) {
  std::string out(8 + 8 * seg.size(), '\0');
  const uint32_t table[2] = {0, static_cast<uint32_t>(seg.size())};
  std::memcpy(out.data(), table, 8);
  std::memcpy(out.data() + 8, seg.data(), 8 * seg.size());
  return out;
}

// A manifest file whose one tensor lists `n` zero-size fragments: 14 words of Manifest (state
// "{}", one Tensor with no name, dtype or shape) wrapped in a ManifestFile with the right magic,
// version and CRC (storage/manifest.capnp).
std::string manifest_with_empty_fragments(uint32_t n) {
  std::vector<uint64_t> m = {
      struct_ptr(0, 2, 4),  // 0: root: Manifest, data 2 words, 4 pointers
      1,                    // 1: step 1
      1,                    // 2: world 1, zeroStage 0
      0,                    // 3: configToml: null
      list_ptr(2, 2, 3),    // 4: stateJson -> word 7, 3 bytes
      0,                    // 5: files: null
      list_ptr(1, 7, 4),    // 6: tensors -> tag at word 8, 4 words of elements
      0,                    // 7: "{}\0"
      struct_ptr(1, 0, 4),  // 8: tag: 1 element of 0 data words, 4 pointers
      0,                    // 9: name: null
      0,                    // 10: dtype: null
      0,                    // 11: shape: null
      list_ptr(0, 7, 0),    // 12: fragments -> tag at word 13, no words
      struct_ptr(static_cast<int32_t>(n), 0, 0),  // 13: tag: n elements of size zero
  };
  std::memcpy(&m[7], "{}", 3);
  const std::string body = flat(m);
  const std::string magic = "zeroflow-checkpoint";  // 19 bytes + NUL: 3 words
  std::vector<uint64_t> f = {
      struct_ptr(0, 1, 2),                                           // 0: ManifestFile
      2 | (uint64_t(st::crc32_of(body.data(), body.size())) << 32),  // 1: version, crc32
      list_ptr(1, 2, static_cast<uint32_t>(magic.size() + 1)),       // 2: magic -> 4
      list_ptr(3, 2, static_cast<uint32_t>(body.size())),            // 3: body -> 7
      0,                                                             // 4-6: the magic's text
      0,
      0};
  std::memcpy(&f[4], magic.data(), magic.size());
  f.resize(7 + body.size() / 8);
  std::memcpy(&f[7], body.data(), body.size());
  return flat(f);
}

zf::param_layout tiny_layout() {
  return zf::testing::shape_layout(1, 8, 1, 8, 4);
}

// Step 1 of layout L, every parameter 0.5, no moments, saved under root.
fs::path save_tiny(const fs::path& root, const zf::param_layout& L) {
  std::vector<float> p(L.total, 0.5f);
  st::checkpoint_view cv;
  cv.step = 1;
  cv.layout = &L;
  cv.params = p.data();
  return st::save_checkpoint(root, cv);
}

fs::path write_step(const temp_dir& d, const std::string& manifest) {
  const fs::path step = d / "step-000001";
  fs::create_directories(step);
  std::ofstream(step / "manifest", std::ios::binary) << manifest;
  return step;
}

}  // namespace

TEST_CASE("fuzz regression: a manifest cannot claim millions of zero-size fragments") {
  temp_dir d("fuzz_ckpt");
  // The hand-made message is a manifest: with a few fragments it reads.
  const auto small = st::read_checkpoint_manifest(write_step(d, manifest_with_empty_fragments(3)));
  REQUIRE(small.tensors.size() == 1);
  CHECK(small.tensors[0].fragments.size() == 3);
  // 1 Mi fragments in 200 bytes. Cap'n Proto's traversal limit counts a zero-size element as one
  // word, and the limit was at least 8 Mi words whatever the file's size: this file read as a
  // tensor of 1 Mi fragments (100 MB of records; 8 Mi of them took over 10 s under ASan). The
  // limit now follows the file's size.
  const std::string msg = error_of(
      [&] { st::read_checkpoint_manifest(write_step(d, manifest_with_empty_fragments(1 << 20))); });
  CHECK(contains(msg, "corrupt checkpoint manifest"));
  CHECK(contains(msg, "step-000001/manifest"));
}

TEST_CASE("fuzz regression: a fragment whose end wraps past 2^64 is refused, not allocated") {
  temp_dir d("fuzz_wrap");
  const zf::param_layout L = tiny_layout();
  const fs::path step = save_tiny(d.path, L);
  st::checkpoint_manifest m = st::read_checkpoint_manifest(step);
  // offset + length = 2^64 + 8: "ends at byte 8", inside the file; the part of it wanted was then
  // staged in a buffer of length / 4 floats (std::length_error, not a message).
  st::fragment& f = m.tensors[0].fragments[0];
  f.offset = 16;
  f.length = uint64_t(0) - 8;
  std::vector<float> out(L.total);
  const std::string msg =
      error_of([&] { st::load_range(m, L, 1, L.total, out.data(), nullptr, nullptr); });
  CHECK_MESSAGE(contains(msg, "corrupt checkpoint manifest"), msg);
  CHECK_MESSAGE(contains(msg, "runs past the end of"), msg);
}

TEST_CASE("manifest: a data file named outside the step folder is refused, not read") {
  // Found reading the code the checkpoint fuzzer drives: fragment files were joined to the step
  // folder as given, so a manifest naming "../x" made load and verify read a file outside it.
  temp_dir d("fuzz_escape");
  const zf::param_layout L = tiny_layout();
  const fs::path step1 = save_tiny(d.path, L);
  // Step 2's manifest, written through the API, points at a file beside the step folders.
  std::vector<st::fragment> all;
  for (const auto& t : st::read_checkpoint_manifest(step1).tensors)
    for (st::fragment f : t.fragments) {
      f.file = "../outside.bin";
      all.push_back(f);
    }
  fs::copy_file(step1 / "rank-00000.bin", d.path / "outside.bin");
  const fs::path tmp = st::begin_checkpoint(d.path, 2);
  st::write_manifest(d.path, tmp, L, all, {2, 1, 0, "", nlohmann::json::object()});
  const fs::path step2 = st::publish_checkpoint(d.path, tmp, 2, 3);
  const std::string msg = error_of([&] { st::load_checkpoint(step2, L); });
  CHECK_MESSAGE(contains(msg, "corrupt checkpoint manifest"), msg);
  CHECK_MESSAGE(contains(msg, "\"../outside.bin\" is not a plain file name"), msg);
  CHECK_FALSE(st::verify_checkpoint(step2).ok);
}

TEST_CASE("fuzz regression: a data file name that is not UTF-8 is refused by name, not thrown") {
  // fuzz_checkpoint: quoting the bad name for the message threw nlohmann's type_error (invalid
  // UTF-8), which is not a zf::error, so the refusal became a crash.
  temp_dir d("fuzz_utf8_name");
  const zf::param_layout L = tiny_layout();
  const fs::path step1 = save_tiny(d.path, L);
  std::vector<st::fragment> all;
  for (const auto& t : st::read_checkpoint_manifest(step1).tensors)
    for (st::fragment f : t.fragments) {
      f.file = "src/\x91.bin";
      all.push_back(f);
    }
  const fs::path tmp = st::begin_checkpoint(d.path, 2);
  fs::create_directories(tmp / "src");  // the file is there: only its name is wrong
  fs::copy_file(step1 / "rank-00000.bin", tmp / "src" / "\x91.bin");
  st::write_manifest(d.path, tmp, L, all, {2, 1, 0, "", nlohmann::json::object()});
  const fs::path step2 = st::publish_checkpoint(d.path, tmp, 2, 3);
  const std::string msg = error_of([&] { st::read_checkpoint_manifest(step2); });
  CHECK_MESSAGE(contains(msg, "is not a plain file name"), msg);
  CHECK_MESSAGE(contains(msg, "src/\xef\xbf\xbd.bin"), msg);  // the bad byte shown as U+FFFD
}
