// libFuzzer target: the checkpoint manifest reader (storage/checkpoint.cpp) and what reads
// through it: read_checkpoint_manifest, verify_checkpoint, load_checkpoint and load_range.
//
// At start-up a tiny model's checkpoints are written for real into a scratch root:
//   step-000001/  one writer (rank-00000.bin): one fragment per tensor and kind
//   step-000002/  two writers (rank-00000.bin, rank-00001.bin) splitting the flat range inside a
//                 tensor: tensors with two fragments per kind
// Each input then replaces one step folder's manifest (or `latest`), is read, and the originals
// are put back. Byte 0 of the input picks what the rest is:
//   b % 3 == 0  the manifest file as is (the outer ManifestFile message and its CRC)
//   b % 3 == 1  the inner Manifest message (padded with zeros to whole words), wrapped in a
//               ManifestFile with the right magic, version and CRC: mutations reach the fields
//               instead of failing the CRC check
//   b % 3 == 2  the text of ROOT/latest, resolved against the two real step folders
// and (b / 3) % 2 picks step-000001 or step-000002. ZF_FUZZ_SEED_OUT=DIR makes start-up also
// write the seed inputs (both manifests in the first two forms) into DIR (fuzz/corpus/checkpoint
// was made so).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/layout.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"

namespace {

namespace fs = std::filesystem;
using namespace zf;
using namespace zf::storage;

struct fixture {
  fs::path root;
  param_layout layout;
  fs::path steps[2];
  std::string manifests[2];  // the manifest files as written
};

std::string read_all(const fs::path& p) {
  return read_text_file(p);
}

// The Manifest message inside a manifest file (for the wrapped seed form).
std::string inner_body(const std::string& file) {
  return manifest_body(file);
}

// A body padded with zeros to whole words in the real envelope, so mutations reach the fields.
std::string wrap(std::string body) {
  body.resize((body.size() + 7) / 8 * 8, '\0');
  return wrap_manifest_body(body);
}

fixture make_fixture() {
  fixture fx;
  fx.root = fuzz::scratch_dir("checkpoint") / "ckpt";
  run_config cfg;
  cfg.model.n_layer = 1;
  cfg.model.n_head = 1;
  cfg.model.n_embd = 4;
  cfg.model.n_positions = 4;
  cfg.model.vocab_size = 8;
  fx.layout = make_layout(spec_of(cfg.model));
  const std::size_t total = fx.layout.total;
  std::vector<float> p(total), m(total), v(total);
  for (std::size_t i = 0; i < total; ++i) {
    p[i] = 0.25f * static_cast<float>(i);
    m[i] = -0.5f * static_cast<float>(i);
    v[i] = 1.0f + static_cast<float>(i);
  }
  write_options o;
  o.direct = false;  // tmpfs has no O_DIRECT
  const nlohmann::json state = {{"step", 1}, {"rng", "fuzz"}};
  for (int step = 1; step <= 2; ++step) {
    const fs::path tmp = begin_checkpoint(fx.root, step);
    std::vector<fragment> frags;
    // step 1: one writer; step 2: two, split 3 floats into the second tensor
    const std::size_t cut = step == 1 ? total : fx.layout.params[1].offset + 3;
    frags = write_shard(tmp, 0, fx.layout, shard_data{0, cut, p.data(), m.data(), v.data()}, o);
    if (cut < total) {
      auto more =
          write_shard(tmp, 1, fx.layout,
                      shard_data{cut, total, p.data() + cut, m.data() + cut, v.data() + cut}, o);
      frags.insert(frags.end(), more.begin(), more.end());
    }
    fx.steps[step - 1] =
        commit_checkpoint(fx.root, tmp, fx.layout, frags, {step, step, 0, to_toml(cfg), state}, 10);
    fx.manifests[step - 1] = read_all(fx.steps[step - 1] / "manifest");
  }
  if (const char* out = std::getenv("ZF_FUZZ_SEED_OUT")) {
    for (int i = 0; i < 2; ++i) {
      const char tag = static_cast<char>(3 * i);  // raw form, step folder i
      fuzz::write_file(fs::path(out) / ("manifest-" + std::to_string(i + 1)),
                       std::string(1, tag) + fx.manifests[i]);
      fuzz::write_file(fs::path(out) / ("body-" + std::to_string(i + 1)),
                       std::string(1, static_cast<char>(tag + 1)) + inner_body(fx.manifests[i]));
    }
    fuzz::write_file(fs::path(out) / "latest", std::string("\x02step-000002\n"));
  }
  return fx;
}

// Every reader on a step folder; refusals (zf::error) are the expected outcome of bad bytes.
void read_step(const fixture& fx, const fs::path& dir) {
  checkpoint_manifest m;
  try {
    m = read_checkpoint_manifest(dir);
  } catch (const zf::error&) {
    return;
  }
  const verify_report r = verify_checkpoint(dir);
  (void)r;
  try {
    (void)load_checkpoint(dir, fx.layout);
  } catch (const zf::error&) {
  }
  const std::size_t total = fx.layout.total;
  std::vector<float> a(total), b(total), c(total);
  for (bool all : {true, false}) {
    try {
      range_options o;
      o.all_or_nothing = all;
      load_range(m, fx.layout, 1, total - 1, a.data(), b.data(), c.data(), o);
    } catch (const zf::error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const fixture fx = make_fixture();
  if (size == 0) return 0;
  const int form = data[0] % 3, which = (data[0] / 3) % 2;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const fs::path manifest = fx.steps[which] / "manifest";
  if (form == 0) {
    fuzz::write_file(manifest, rest);
    read_step(fx, fx.steps[which]);
  } else if (form == 1) {
    fuzz::write_file(manifest, wrap(std::string(rest)));
    read_step(fx, fx.steps[which]);
  } else {
    fuzz::write_file(fx.root / "latest", rest);
    try {
      (void)has_checkpoint(fx.root);
      (void)read_checkpoint_manifest(fx.root);
    } catch (const zf::error&) {
    }
  }
  // Put the real files back for the next input.
  fuzz::write_file(manifest, fx.manifests[which]);
  fuzz::write_file(fx.root / "latest", std::string_view("step-000002\n"));
  return 0;
}
