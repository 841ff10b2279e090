// Quantized checkpoints (storage/quant_checkpoint): a quantized model written and read back is
// the same model byte for byte (every format's packed codes, scales, zero points, LoRC factors,
// the float tensors; GPT-2 and Llama, tied and untied heads); verify checks every part; a
// damaged part is named on load and by verify; the float loads (training) refuse it by name;
// a manifest with an unknown format or impossible shape is refused.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "quant_fixtures.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/quant/quantize_model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/quant_checkpoint.hpp"
#include "test_util.hpp"

using namespace zf;
namespace st = zf::storage;
namespace fs = std::filesystem;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

model_config small(const char* arch, bool tied) {
  return zf::testing::quant_test_config(arch, tied, 32);
}

// A random model quantized as `scheme` (RTN, LoRC of `rank`), as inference weights.
lm_weights quantized(const model_config& m, const std::string& scheme, int rank, bool head) {
  const auto L = layout_of(m);
  std::vector<float> flat(L.total);
  init_params(L, m.n_layer, 7, flat.data());
  lm_weights w = lm_weights_of(m, flat.data(), "q");
  quant::quantize_options o;
  const bool per_channel = scheme == "fp8" || scheme == "fp8_e5m2" || scheme == "fp6";
  o.s = quant::scheme_named(scheme, per_channel ? 0 : 32);
  o.lorc_rank = rank;
  o.head = head;
  attach_quant(w, quant::quantize_model(w.cfg, flat.data(), o, nullptr));
  return w;
}

void check_same(const quant_linear& a, const quant_linear& b) {
  CHECK(a.fmt == b.fmt);
  CHECK(a.k == b.k);
  CHECK(a.n == b.n);
  CHECK(a.group == b.group);
  CHECK(a.asym == b.asym);
  CHECK(a.act_int8 == b.act_int8);
  CHECK(a.rank == b.rank);
  CHECK(a.data == b.data);
  CHECK(a.scales == b.scales);
  CHECK(a.zeros == b.zeros);
  CHECK(a.lorc_a == b.lorc_a);
  CHECK(a.lorc_b == b.lorc_b);
}

std::string config_of(const model_config& m) {
  run_config c;
  c.model = m;
  return to_toml(c);
}

}  // namespace

TEST_CASE("quant checkpoint: every scheme round-trips byte for byte, GPT-2 and Llama") {
  struct variant {
    const char* arch;
    bool tied;
    const char* scheme;
    int rank;
    bool head;
  };
  const variant vs[] = {{"gpt2", true, "w4a16", 4, true}, {"gpt2", true, "w8a8", 0, false},
                        {"llama", false, "fp6", 2, true}, {"llama", true, "fp8", 0, true},
                        {"gpt2", false, "fp4", 0, true},  {"llama", false, "fp8_e5m2", 0, false}};
  for (const auto& v : vs) {
    CAPTURE(std::string(v.arch));
    CAPTURE(std::string(v.scheme));
    temp_dir d("qckpt");
    const model_config m = small(v.arch, v.tied);
    const lm_weights w = quantized(m, v.scheme, v.rank, v.head);
    const fs::path step =
        st::save_quantized_checkpoint(d.path, 5, config_of(m), {{"note", "test"}}, w);
    CHECK(step.filename() == "step-000005");
    const auto man = st::read_checkpoint_manifest(d.path);
    CHECK(man.quant_scheme == v.scheme);
    CHECK(man.quant_method == w.quant->method);
    CHECK(man.state["note"] == "test");
    const auto* qkv = man.find(st::quant_tensor_names(w.cfg)[0]);
    REQUIRE(qkv);
    CHECK_FALSE(qkv->quant.empty());
    CHECK(qkv->quant.k == m.n_embd);
    CHECK(st::verify_checkpoint(d.path).ok);

    const lm_weights back = st::load_quantized_weights(man, spec_of(m), "back");
    REQUIRE(back.quant);
    REQUIRE(back.quant->linears.size() == w.quant->linears.size());
    for (std::size_t i = 0; i < w.quant->linears.size(); ++i)
      check_same(back.quant->linears[i], w.quant->linears[i]);
    CHECK(bool(back.quant->head) == v.head);
    if (v.head && back.quant->head) check_same(*back.quant->head, *w.quant->head);
    for (std::size_t l = 0; l < back.layers.size(); ++l)
      CHECK(back.layers[l].quant == &back.quant->blocks[l]);
    // every float tensor equal; the quantized ones are not stored (zeros)
    const auto names = st::quant_tensor_names(w.cfg);
    for (auto& p : w.layout.params) {
      const bool q = std::find(names.begin(), names.end(), p.name) != names.end() &&
                     (p.name != "lm_head.weight" || v.head);
      const float* a = back.store.data() + p.offset;
      if (q)
        CHECK(std::all_of(a, a + p.numel, [](float x) { return x == 0; }));
      else
        CHECK(std::memcmp(a, w.store.data() + p.offset, p.numel * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("quant checkpoint: a damaged part is named, and training refuses it by name") {
  temp_dir d("qckptbad");
  const model_config m = small("gpt2", true);
  const lm_weights w = quantized(m, "w4a16", 2, true);
  st::save_quantized_checkpoint(d.path, 1, config_of(m), {}, w);
  const auto L = layout_of(m);

  // float loads refuse it, naming the scheme
  auto msg = error_of([&] { st::load_checkpoint(d.path, L); });
  CHECK(contains(msg, "is quantized (w4a16, rtn+lorc2)"));
  std::vector<float> out(L.total);
  msg = error_of([&] { st::load_range(d.path, L, 0, 10, out.data(), nullptr, nullptr); });
  CHECK(contains(msg, "quantized"));
  // a second quantized write into the same root is refused
  msg = error_of([&] { st::save_quantized_checkpoint(d.path, 2, config_of(m), {}, w); });
  CHECK(contains(msg, "already holds checkpoints"));

  // one flipped byte in the quantized file: load names the file and tensor, verify lists it
  const fs::path qf = d.path / "step-000001" / "quant-00000.bin";
  {
    std::fstream f(qf, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0;
    f.read(&c, 1);
    f.seekp(100);
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  const auto man = st::read_checkpoint_manifest(d.path);
  msg = error_of([&] { st::load_quantized_weights(man, spec_of(m), "x"); });
  CHECK(contains(msg, "quant-00000.bin is corrupt"));
  CHECK(contains(msg, "h.0.attn.c_attn.weight"));
  auto rep = st::verify_checkpoint(d.path);
  CHECK_FALSE(rep.ok);
  CHECK(rep.problems.size() == 1);
  CHECK(contains(rep.problems.at(0), "qdata"));

  // a truncated quantized file
  fs::resize_file(qf, fs::file_size(qf) - 8);
  msg = error_of([&] { st::load_quantized_weights(man, spec_of(m), "x"); });
  CHECK(contains(msg, "is truncated"));
}

TEST_CASE("quant checkpoint: stored_parts refuses an unknown format and impossible shapes") {
  const bool none[3] = {false, false, false};
  st::quant_entry q{"int4", 256, 64, 128, 0, true, false};
  auto parts = st::stored_parts(&q, {256, 64}, none, "t");
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].kind == st::kind_qdata);
  CHECK(parts[0].elems == 64u * 128);  // two 4-bit codes a byte
  CHECK(parts[1].elems == 64u * 2);    // scales: 2 groups a row
  CHECK(parts[2].kind == st::kind_qzeros);
  q.rank = 8;
  q.asym = false;
  parts = st::stored_parts(&q, {256, 64}, none, "t");
  REQUIRE(parts.size() == 4);
  CHECK(parts[2].elems == 256u * 8);
  CHECK(parts[3].elems == 8u * 64);
  st::quant_entry bad = q;
  bad.format = "int3";
  CHECK(contains(error_of([&] { st::stored_parts(&bad, {}, none, "tensor 'x'"); }),
                 "tensor 'x': quantized format 'int3' is unknown"));
  bad = q;
  bad.group = 96;
  CHECK(contains(error_of([&] { st::stored_parts(&bad, {}, none, "t"); }), "group size 96"));
  bad = q;
  bad.rank = 65;
  CHECK(contains(error_of([&] { st::stored_parts(&bad, {}, none, "t"); }), "LoRC rank 65"));
  bad = q;
  bad.act_int8 = true;
  CHECK(contains(error_of([&] { st::stored_parts(&bad, {}, none, "t"); }), "W8A8"));
}
