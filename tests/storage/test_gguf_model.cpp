// GGUF <-> zeroflow GPT-2 models (storage/gguf_model): a model written in llama.cpp's GPT-2
// layout reads back to the same fp32 weights (f32) or to ggml's dequantization of the written
// rows (f16, q8_0, q4_0), with the same tokenizer and the same logits; files that are not a
// GPT-2 GGUF we read are refused naming the file and the key or tensor.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "gguf_fixtures.hpp"
#include "kernels/ggml_quant.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/model.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_model.hpp"
#include "test_util.hpp"

using namespace zf;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;
using sz = std::size_t;
using zf::testing::gguf_fixtures::logits_of;
using zf::testing::gguf_fixtures::rewrite;

namespace {

const tokenizer& gpt2_tok() {
  static const tokenizer tok = tokenizer::load_gpt2(ZF_DATA_DIR "/gpt2");
  return tok;
}

// A small GPT-2 with GPT-2's vocabulary (padded past the tokenizer when vocab > 50257).
lm_weights small_model(bool tied, int vocab, uint64_t seed) {
  model_config m;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 48;
  m.vocab_size = vocab;
  m.tied_head = tied;
  const model_spec s = spec_of(m);
  const param_layout L = make_layout(s);
  std::vector<float> flat(L.total);
  init_params(L, s.n_layer, seed, flat.data());
  std::mt19937 g{unsigned(seed)};  // norms and biases away from 1 and 0 too
  std::normal_distribution<float> n(0.0f, 0.1f);
  for (const auto& p : L.params)
    if (p.shape.size() == 1)
      for (sz i = 0; i < p.numel; ++i) flat[p.offset + i] += n(g);
  return lm_weights_of(m, flat.data(), "small");
}

}  // namespace

TEST_CASE("gguf model: GPT-2 in f32 reads back bit for bit with its tokenizer") {
  temp_dir d("gguf_model");
  for (bool tied : {true, false}) {
    CAPTURE(tied);
    const lm_weights w = small_model(tied, tied ? 50257 : 50304, 3);
    const auto file = d.path / (tied ? "tied.gguf" : "untied.gguf");
    storage::write_gpt2_gguf(w, gpt2_tok(), file, kernels::ggml_format::f32);
    const auto g = storage::gguf_file::open(file);
    CHECK(g.get_string("general.architecture") == "gpt2");
    CHECK(g.get_int("gpt2.block_count") == 2);
    CHECK(g.get_int("gpt2.feed_forward_length") == 256);
    CHECK(g.at("blk.1.attn_qkv.weight").dims == std::vector<uint64_t>{64, 192});
    CHECK(g.at("output.weight").dims == std::vector<uint64_t>{64, uint64_t(w.cfg.vocab_size)});
    const auto tokens = g.get_strings("tokenizer.ggml.tokens");
    REQUIRE(tokens.size() == sz(w.cfg.vocab_size));
    CHECK(tokens[464] == "The");
    CHECK(tokens[2068] == "\xc4\xa0quick");  // "Ġquick"
    CHECK(tokens[50256] == "<|endoftext|>");
    CHECK(g.get_ints("tokenizer.ggml.token_type")[50256] == 3);
    CHECK(g.get_strings("tokenizer.ggml.merges")[0] == "\xc4\xa0 t");  // GPT-2's first merge

    const auto r = storage::read_gpt2_gguf(file);
    CHECK(r.weights.cfg.tied_head == tied);
    CHECK(r.weights.cfg.vocab_size == w.cfg.vocab_size);
    REQUIRE(r.weights.store.size() == w.store.size());
    CHECK(std::memcmp(r.weights.store.data(), w.store.data(), w.store.size() * 4) == 0);
    CHECK(contains(r.formats, "f32 x "));
    CHECK(r.tok.vocab_size() == 50257);  // padding rows are not tokens
    const std::string text = "It was a bright cold day in April, and the clocks were striking.";
    CHECK(r.tok.encode(text) == gpt2_tok().encode(text));
    CHECK(r.tok.eot() == 50256);
    const std::vector<int> ids = gpt2_tok().encode(text);
    CHECK(logits_of(r.weights, ids) == logits_of(w, ids));
  }
}

TEST_CASE("gguf model: block formats read back as ggml's dequantization of the written rows") {
  temp_dir d("gguf_blocks");
  const lm_weights w = small_model(true, 50257, 5);
  const auto& p = w.layout.at("h.1.mlp.c_fc.weight");  // Conv1D [64 in, 256 out]
  const std::vector<int> ids = gpt2_tok().encode("The quick brown fox jumps over the lazy dog.");
  const auto ref = logits_of(w, ids);
  for (auto f : {kernels::ggml_format::f16, kernels::ggml_format::bf16, kernels::ggml_format::q8_0,
                 kernels::ggml_format::q4_0}) {
    const char* name = kernels::ggml_info(f).name;
    CAPTURE(name);
    const auto file = d.path / (std::string(name) + ".gguf");
    storage::write_gpt2_gguf(w, gpt2_tok(), file, f);
    const auto r = storage::read_gpt2_gguf(file);
    CHECK(contains(r.formats, std::string(name) + " x "));
    // output 7 of c_fc: its 64 inputs, quantized as one GGUF row and decoded
    std::vector<float> row(64), back(64);
    for (int i = 0; i < 64; ++i) row[sz(i)] = w.store[p.offset + sz(i) * 256 + 7];
    std::vector<unsigned char> enc(kernels::row_bytes(f, 64));
    kernels::ggml_quantize_row(f, row.data(), 64, enc.data());
    kernels::ggml_dequantize_row(f, enc.data(), 64, back.data());
    int same = 0;
    for (int i = 0; i < 64; ++i) same += r.weights.store[p.offset + sz(i) * 256 + 7] == back[sz(i)];
    CHECK(same == 64);
    // norms and biases stay f32 exactly
    const auto& b = w.layout.at("h.0.attn.c_attn.bias");
    CHECK(std::memcmp(r.weights.store.data() + b.offset, w.store.data() + b.offset, b.numel * 4) ==
          0);
    const auto got = logits_of(r.weights, ids);
    double worst = 0;
    for (sz i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::abs(got[i] - ref[i])));
    MESSAGE(name << ": largest logit change " << worst);
    CHECK(worst > 0);
    CHECK(worst < (f == kernels::ggml_format::q4_0 ? 0.5 : 0.1));
  }
}

TEST_CASE("gguf model: read in place, the file's matrices give the dequantized model's logits") {
  temp_dir d("gguf_inplace");
  const lm_weights w = small_model(true, 50257, 9);
  const std::vector<int> ids = gpt2_tok().encode("It was a bright cold day in April, and the");
  REQUIRE(ids.size() <= 16);  // decode rows: the direct kernel over the exact weights
  for (auto f : {kernels::ggml_format::f32, kernels::ggml_format::f16, kernels::ggml_format::q8_0,
                 kernels::ggml_format::q4_0}) {
    const char* name = kernels::ggml_info(f).name;
    CAPTURE(name);
    const auto file = d.path / (std::string(name) + ".gguf");
    storage::write_gpt2_gguf(w, gpt2_tok(), file, f);
    const auto deq = storage::read_gpt2_gguf(file);
    const auto inp = storage::read_gpt2_gguf(file, true);
    REQUIRE(inp.weights.quant);
    CHECK(inp.weights.quant->scheme == "gguf");
    REQUIRE(inp.weights.quant->head);
    CHECK(inp.weights.quant->head->is_ggml());
    CHECK(inp.weights.quant->linears[3].is_ggml());
    CHECK(inp.weights.quant->linears[3].ggml.fmt == f);
    const auto& qkv = inp.weights.layout.at("h.1.attn.c_attn.weight");
    std::size_t nonzero = 0;  // the projections' fp32 slots are never written
    for (sz i = 0; i < qkv.numel; ++i) nonzero += inp.weights.store[qkv.offset + i] != 0.0f;
    CHECK(nonzero == 0);
    const auto a = logits_of(inp.weights, ids), b = logits_of(deq.weights, ids);
    double worst = 0, scale = 0;
    for (sz i = 0; i < a.size(); ++i) {
      worst = std::max(worst, double(std::abs(a[i] - b[i])));
      scale = std::max(scale, double(std::abs(b[i])));
    }
    // q8_0 / q4_0 multiply 8-bit activations (kernels/ggml_quant.hpp): each block's codes are
    // within d / 2 = max |x| / 254 of x: this random model's logits move by ~0.6% of their
    // scale (2% allowed); the float formats only by fp32 sums.
    const bool q = f == kernels::ggml_format::q8_0 || f == kernels::ggml_format::q4_0;
    MESSAGE(std::string(name) << ": in place vs dequantized, largest logit change " << worst
                              << " of " << scale);
    CHECK(worst <= (q ? 2e-2 : 1e-5) * scale);
  }
}

TEST_CASE("gguf model: other architectures, bad tensors and formats are refused by name") {
  temp_dir d("gguf_refuse");
  const lm_weights w = small_model(true, 50257, 7);
  const auto good = d.path / "good.gguf";
  storage::write_gpt2_gguf(w, gpt2_tok(), good, kernels::ggml_format::f32);
  CHECK(contains(
      error_of([&] { storage::write_gpt2_gguf(w, gpt2_tok(), good, kernels::ggml_format::f32); }),
      "refusing to overwrite"));
  model_config lm;
  lm.arch = "llama";
  lm.n_layer = 1;
  lm.n_embd = 64;
  lm.n_head = 4;
  lm.vocab_size = 50257;
  std::vector<float> lf(make_layout(spec_of(lm)).total, 0.01f);
  const lm_weights llama = lm_weights_of(lm, lf.data(), "l");
  CHECK(contains(error_of([&] {
                   storage::write_gpt2_gguf(llama, gpt2_tok(), d.path / "l.gguf",
                                            kernels::ggml_format::f32);
                 }),
                 "only dense GPT-2 models"));

  auto refused = [&](const char* tag,
                     const std::function<void(std::vector<storage::gguf_kv>&,
                                              std::vector<storage::gguf_write>&)>& fix) {
    const auto bad = d.path / (std::string(tag) + ".gguf");
    rewrite(good, bad, fix);
    const std::string msg = error_of([&] { storage::read_gpt2_gguf(bad); });
    CHECK(contains(msg, bad.string()));
    return msg;
  };
  CHECK(contains(refused("arch",
                         [](auto& md, auto&) {
                           for (auto& kv : md)
                             if (kv.key == "general.architecture")
                               kv.value = storage::gguf_value::string("llama");
                         }),
                 "general.architecture is 'llama'"));
  CHECK(contains(refused("dims",
                         [](auto&, auto& ts) {
                           for (auto& t : ts)
                             if (t.name == "blk.0.ffn_up.bias") t.name = "blk.0.ffn_upx.bias";
                         }),
                 "blk.0.ffn_up.bias"));
  std::vector<unsigned char> q5(22 * 128);  // 64 x 64 elements of Q5_0: 128 blocks of 32
  CHECK(contains(refused("type",
                         [&](auto&, auto& ts) {
                           for (auto& t : ts)
                             if (t.name == "blk.0.attn_output.weight") {
                               t.type = 6;  // Q5_0
                               t.data = q5.data();
                               t.nbytes = q5.size();
                             }
                         }),
                 "blk.0.attn_output.weight has ggml type 6"));
  CHECK(contains(refused("shape",
                         [](auto& md, auto&) {
                           for (auto& kv : md)
                             if (kv.key == "gpt2.feed_forward_length")
                               kv.value = storage::gguf_value::u32(128);
                         }),
                 "blk.0.ffn_up.weight has dims [64, 256]"));
  CHECK(contains(refused("tok",
                         [](auto& md, auto&) {
                           for (auto& kv : md)
                             if (kv.key == "tokenizer.ggml.model")
                               kv.value = storage::gguf_value::string("bert");
                         }),
                 "tokenizer.ggml.model is 'bert'"));
}

TEST_CASE("gguf model: --dtype f16, q8_0, q4_0 quantize at load to the bits of the GGUF file") {
  // The same quantizers and kernels: a model converted at load (serve --dtype q4_0) gives the
  // logits of its GGUF export read in place, bit for bit, in place or as a copy. The model is
  // the file's dequantized weights (a tied head puts the embedding table in the file's format;
  // ggml's quantizers give a dequantized row its own bytes back).
  temp_dir d("gguf_dtype");
  const std::vector<int> ids = gpt2_tok().encode("It was a bright cold day in April, and the");
  for (const auto dt : {weight_dtype::f16, weight_dtype::q8_0, weight_dtype::q4_0}) {
    kernels::ggml_format f{};
    REQUIRE(ggml_format_of(dt, f));
    const char* name = kernels::ggml_info(f).name;
    CAPTURE(name);
    const auto file = d.path / (std::string(name) + ".gguf");
    storage::write_gpt2_gguf(small_model(true, 50257, 9), gpt2_tok(), file, f);
    lm_weights w = storage::read_gpt2_gguf(file).weights;
    const auto want = logits_of(storage::read_gpt2_gguf(file, true).weights, ids);
    const auto copy = serving_weights_of(w, dt, "--dtype");
    to_serving_weights(w, dt, "--dtype");
    REQUIRE(w.quant);
    CHECK(w.quant->scheme == "gguf");
    CHECK(w.quant->head->ggml.fmt == f);
    CHECK(logits_of(w, ids) == want);
    CHECK(logits_of(*copy, ids) == want);
    // already converted: another dtype is refused by name
    CHECK(contains(error_of([&] { to_serving_weights(w, weight_dtype::bf16, "--dtype bf16"); }),
                   "already quantized (gguf"));
  }
  CHECK(contains(error_of([] { parse_weight_dtype("q5_0", "--dtype"); }),
                 "--dtype: expected fp32, bf16, f16, q8_0 or q4_0, got 'q5_0'"));
}

TEST_CASE("gguf model: q4_K and q6_K tensors are read, in place too, and not written") {
  // llama.cpp's K formats (Q4_K_M files): ffn_down has rows of 256 (the model's I), re-written
  // here as q4_K in block 0 and q6_K in block 1 by the plain encoder.
  temp_dir d("gguf_kquant");
  const lm_weights w = small_model(true, 50257, 13);
  const auto f32 = d.path / "f32.gguf", mixed = d.path / "k.gguf";
  storage::write_gpt2_gguf(w, gpt2_tok(), f32, kernels::ggml_format::f32);
  std::vector<std::vector<std::uint8_t>> keep;
  rewrite(f32, mixed, [&](auto&, auto& ts) {
    for (auto& t : ts)
      for (int l = 0; l < 2; ++l)
        if (t.name == "blk." + std::to_string(l) + ".ffn_down.weight") {
          const auto f = l == 0 ? kernels::ggml_format::q4_K : kernels::ggml_format::q6_K;
          const int k = int(t.dims[0]), n = int(t.dims[1]);
          keep.emplace_back(kernels::row_bytes(f, k) * sz(n));
          kernels::ggml_quantize_rows(f, reinterpret_cast<const float*>(t.data), 0, n, k,
                                      keep.back().data());
          t = {t.name, uint32_t(kernels::ggml_info(f).ggml_type), t.dims, keep.back().data(),
               keep.back().size()};
        }
  });
  const auto deq = storage::read_gpt2_gguf(mixed);
  const auto inp = storage::read_gpt2_gguf(mixed, true);
  CHECK(deq.formats.find("q4_K x 1") != std::string::npos);
  CHECK(deq.formats.find("q6_K x 1") != std::string::npos);
  REQUIRE(inp.weights.quant);
  CHECK(inp.weights.quant->linears[3].ggml.fmt == kernels::ggml_format::q4_K);
  CHECK(inp.weights.quant->linears[7].ggml.fmt == kernels::ggml_format::q6_K);
  // the dequantized read holds ggml's decoding of the file's rows (our [I, C] is their rows
  // transposed)
  const auto& down = deq.weights.layout.at("h.0.mlp.c_proj.weight");
  std::vector<float> row(256);
  int bad = 0;
  for (int o = 0; o < 64; ++o) {
    kernels::ggml_dequantize_row(
        kernels::ggml_format::q4_K,
        keep[0].data() + sz(o) * kernels::row_bytes(kernels::ggml_format::q4_K, 256), 256,
        row.data());
    for (int j = 0; j < 256; ++j) bad += deq.weights.store[down.offset + sz(j) * 64 + o] != row[j];
  }
  CHECK(bad == 0);
  // the K formats run fp32 activations: in place gives the dequantized model's logits
  const std::vector<int> ids = gpt2_tok().encode("It was a bright cold day in April");
  const auto a = logits_of(inp.weights, ids), b = logits_of(deq.weights, ids);
  double worst = 0, scale = 0;
  for (sz i = 0; i < a.size(); ++i) {
    worst = std::max(worst, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  CHECK(worst <= 1e-5 * scale);
  // export refuses them by name (llama.cpp's quantizer is the one to write them)
  CHECK_THROWS_WITH(
      storage::write_gpt2_gguf(w, gpt2_tok(), d.path / "no.gguf", kernels::ggml_format::q4_K),
      doctest::Contains("q4_K is read, not written"));
  CHECK_FALSE(std::filesystem::exists(d.path / "no.gguf"));
}
