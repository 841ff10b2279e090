// load_hf_weights on the fixtures of tests/golden/gen_hf.py: config fields, the canonical
// [in, out] / fused layout against the raw Hugging Face tensors, and errors on broken copies.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/lm_weights.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::safetensors_file;
using zf::storage::st_write;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

const fs::path kHf = fs::path(ZF_SOURCE_DIR) / "tests" / "golden" / "hf";

// Checks that dst ([in, cols], columns [col, col + out)) is the transpose of src [out, in].
void check_transposed(const float* dst, int cols, int col, const std::vector<float>& src, int out,
                      int in) {
  REQUIRE(src.size() == std::size_t(out) * in);
  int bad = 0;
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < in; ++i) bad += dst[std::size_t(i) * cols + col + o] != src[o * in + i];
  CHECK(bad == 0);
}

bool equal(const float* a, const std::vector<float>& b) {
  return std::memcmp(a, b.data(), b.size() * sizeof(float)) == 0;
}

// Copies fixture folder `name` into a temp dir, rewriting its model.safetensors through `edit`
// (which may drop, rename or reshape entries) and its config.json through `edit_cfg`.
void broken_copy(const std::string& name, const fs::path& to,
                 const std::function<void(std::vector<st_write>&)>& edit,
                 const std::function<void(nlohmann::json&)>& edit_cfg = {}) {
  const auto src = safetensors_file::open(kHf / name / "model.safetensors");
  std::vector<st_write> ts;
  for (const auto& t : src.tensors()) ts.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  if (edit) edit(ts);
  zf::storage::write_safetensors(to / "model.safetensors", ts);
  std::ifstream in(kHf / name / "config.json");
  auto cfg = nlohmann::json::parse(in);
  if (edit_cfg) edit_cfg(cfg);
  std::ofstream(to / "config.json") << cfg.dump(1);
}

}  // namespace

TEST_CASE("hf loader: tiny-llama config and fused transposed layout") {
  const auto w = zf::load_hf_weights(kHf / "tiny-llama");
  const auto& c = w.cfg;
  CHECK(c.arch == zf::model_arch::llama);
  CHECK(c.name == "tiny-llama");
  CHECK(c.vocab_size == 458);
  CHECK(c.hidden == 64);
  CHECK(c.n_layer == 2);
  CHECK(c.n_head == 4);
  CHECK(c.n_kv_head == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.intermediate == 160);
  CHECK(c.max_positions == 128);
  CHECK(c.norm_eps == doctest::Approx(1e-5));
  CHECK(c.rope_theta == 10000.0f);
  CHECK_FALSE(c.tied_head);
  CHECK(c.bos_id == 456);
  CHECK(c.eos_id == 457);  // the first of the eos_token_id list
  CHECK(c.qkv_dim() == 128);
  REQUIRE(w.layers.size() == 2);
  CHECK(w.pos_emb == nullptr);
  CHECK(w.normf_b == nullptr);

  const auto raw = safetensors_file::open(kHf / "tiny-llama" / "model.safetensors");
  // BF16 decoding: each stored value is the bf16 bits shifted into the top of an fp32.
  const auto& emb = raw.at("model.embed_tokens.weight");
  REQUIRE(emb.dtype == "BF16");
  for (int i = 0; i < 64; ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, emb.data + 2 * i, 2);
    const std::uint32_t f32 = std::uint32_t(bits) << 16;
    float want;
    std::memcpy(&want, &f32, 4);
    CHECK(w.tok_emb[i] == want);
  }
  CHECK(equal(w.tok_emb, raw.to_f32("model.embed_tokens.weight")));
  CHECK(equal(w.head, raw.to_f32("lm_head.weight")));
  CHECK(w.head != w.tok_emb);
  CHECK(equal(w.normf_w, raw.to_f32("model.norm.weight")));

  for (int l = 0; l < 2; ++l) {
    CAPTURE(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& L = w.layers[l];
    CHECK(equal(L.norm1_w, raw.to_f32(p + "input_layernorm.weight")));
    CHECK(equal(L.norm2_w, raw.to_f32(p + "post_attention_layernorm.weight")));
    // qkv_w [64, 128]: q columns [0, 64), k [64, 96), v [96, 128).
    check_transposed(L.qkv_w, 128, 0, raw.to_f32(p + "self_attn.q_proj.weight"), 64, 64);
    check_transposed(L.qkv_w, 128, 64, raw.to_f32(p + "self_attn.k_proj.weight"), 32, 64);
    check_transposed(L.qkv_w, 128, 96, raw.to_f32(p + "self_attn.v_proj.weight"), 32, 64);
    check_transposed(L.o_w, 64, 0, raw.to_f32(p + "self_attn.o_proj.weight"), 64, 64);
    // up_w [64, 320]: gate columns [0, 160), up [160, 320).
    check_transposed(L.up_w, 320, 0, raw.to_f32(p + "mlp.gate_proj.weight"), 160, 64);
    check_transposed(L.up_w, 320, 160, raw.to_f32(p + "mlp.up_proj.weight"), 160, 64);
    check_transposed(L.down_w, 64, 0, raw.to_f32(p + "mlp.down_proj.weight"), 64, 160);
    CHECK(L.qkv_b == nullptr);
    CHECK(L.o_b == nullptr);
    CHECK(L.up_b == nullptr);
    CHECK(L.norm1_b == nullptr);
  }
  // One allocation holds everything.
  const float* lo = w.store.data();
  const float* hi = lo + w.store.size();
  for (const float* p : {w.tok_emb, w.head, w.normf_w, w.layers[1].down_w})
    CHECK((p >= lo && p < hi));
}

TEST_CASE("hf loader: tiny-gpt2 tied head and Conv1D layout") {
  const auto w = zf::load_hf_weights(kHf / "tiny-gpt2" / "");  // a trailing slash still names it
  const auto& c = w.cfg;
  CHECK(c.arch == zf::model_arch::gpt2);
  CHECK(c.name == "tiny-gpt2");
  CHECK(c.vocab_size == 457);
  CHECK(c.hidden == 64);
  CHECK(c.n_head == 4);
  CHECK(c.n_kv_head == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.intermediate == 256);  // n_inner null -> 4 * n_embd
  CHECK(c.max_positions == 128);
  CHECK(c.tied_head);
  CHECK(c.bos_id == 456);
  CHECK(c.eos_id == 456);
  CHECK(w.head == w.tok_emb);

  const auto raw = safetensors_file::open(kHf / "tiny-gpt2" / "model.safetensors");
  CHECK(raw.find("transformer.h.0.attn.bias") != nullptr);  // the buffer is there, and ignored
  CHECK(raw.find("lm_head.weight") == nullptr);
  CHECK(equal(w.tok_emb, raw.to_f32("transformer.wte.weight")));
  CHECK(equal(w.pos_emb, raw.to_f32("transformer.wpe.weight")));
  CHECK(equal(w.normf_w, raw.to_f32("transformer.ln_f.weight")));
  CHECK(equal(w.normf_b, raw.to_f32("transformer.ln_f.bias")));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    const auto& L = w.layers[l];
    CHECK(equal(L.norm1_w, raw.to_f32(p + "ln_1.weight")));
    CHECK(equal(L.norm1_b, raw.to_f32(p + "ln_1.bias")));
    CHECK(equal(L.qkv_w, raw.to_f32(p + "attn.c_attn.weight")));
    CHECK(equal(L.qkv_b, raw.to_f32(p + "attn.c_attn.bias")));
    CHECK(equal(L.o_w, raw.to_f32(p + "attn.c_proj.weight")));
    CHECK(equal(L.o_b, raw.to_f32(p + "attn.c_proj.bias")));
    CHECK(equal(L.norm2_w, raw.to_f32(p + "ln_2.weight")));
    CHECK(equal(L.norm2_b, raw.to_f32(p + "ln_2.bias")));
    CHECK(equal(L.up_w, raw.to_f32(p + "mlp.c_fc.weight")));
    CHECK(equal(L.up_b, raw.to_f32(p + "mlp.c_fc.bias")));
    CHECK(equal(L.down_w, raw.to_f32(p + "mlp.c_proj.weight")));
    CHECK(equal(L.down_b, raw.to_f32(p + "mlp.c_proj.bias")));
  }
}

TEST_CASE("hf loader: sharded files and names without prefix") {
  const auto ref = zf::load_hf_weights(kHf / "tiny-llama");
  temp_dir dir("hf_shards");
  // Two shards: the layers in the second file, everything else in the first.
  const auto src = safetensors_file::open(kHf / "tiny-llama" / "model.safetensors");
  std::vector<st_write> a, b;
  for (const auto& t : src.tensors())
    (t.name.find("layers.") != std::string::npos ? b : a)
        .push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  zf::storage::write_safetensors(dir / "model-00001-of-00002.safetensors", a);
  zf::storage::write_safetensors(dir / "model-00002-of-00002.safetensors", b);
  fs::copy_file(kHf / "tiny-llama" / "config.json", dir / "config.json");
  const auto w = zf::load_hf_weights(dir.path);
  REQUIRE(w.store.size() == ref.store.size());
  CHECK(std::memcmp(w.store.data(), ref.store.data(), w.store.size() * sizeof(float)) == 0);

  // The same tensor in two shards is an error naming both files.
  zf::storage::write_safetensors(dir / "model-extra.safetensors", {b.front()});
  const auto msg = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(msg, b.front().name), msg);
  CHECK_MESSAGE(contains(msg, "model-extra.safetensors"), msg);

  // GPT-2 saved from the bare GPT2Model: no "transformer." prefix.
  temp_dir g("hf_noprefix");
  broken_copy("tiny-gpt2", g.path, [](auto& ts) {
    for (auto& t : ts) t.name = t.name.substr(std::string("transformer.").size());
  });
  const auto gw = zf::load_hf_weights(g.path);
  const auto gref = zf::load_hf_weights(kHf / "tiny-gpt2");
  REQUIRE(gw.store.size() == gref.store.size());
  CHECK(std::memcmp(gw.store.data(), gref.store.data(), gw.store.size() * sizeof(float)) == 0);
}

TEST_CASE("hf loader: errors name the file and the key or tensor") {
  temp_dir dir("hf_errors");
  const std::string st = (dir / "model.safetensors").string();

  // No config.json.
  std::string m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, (dir / "config.json").string()), m);

  // Unsupported model_type.
  broken_copy("tiny-llama", dir.path, {}, [](auto& c) { c["model_type"] = "bert"; });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "model_type \"bert\" is unsupported"), m);
  CHECK_MESSAGE(contains(m, (dir / "config.json").string()), m);

  // rope_scaling: an unsupported type, a missing or malformed field (see also the rope_scaling
  // test case below).
  const std::string cfg_file = (dir / "config.json").string();
  broken_copy("tiny-llama31", dir.path, {}, [](auto& c) {
    c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  });
  CHECK(error_of([&] { zf::load_hf_weights(dir.path); }) ==
        "hf: " + cfg_file +
            ": \"rope_scaling.rope_type\" is \"yarn\", only \"llama3\", \"linear\" or "
            "\"default\" is supported");
  broken_copy("tiny-llama31", dir.path, {}, [](auto& c) { c["rope_scaling"].erase("factor"); });
  CHECK(error_of([&] { zf::load_hf_weights(dir.path); }) ==
        "hf: " + cfg_file + ": missing \"rope_scaling.factor\" (a positive number)");

  // A required key of the wrong type.
  broken_copy("tiny-gpt2", dir.path, {}, [](auto& c) { c["n_head"] = "four"; });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "\"n_head\" is \"four\", expected a positive integer"), m);

  // Missing tensor.
  broken_copy("tiny-llama", dir.path, [](auto& ts) {
    std::erase_if(ts, [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "'model.layers.1.mlp.up_proj.weight' not found"), m);
  CHECK_MESSAGE(contains(m, dir.path.string()), m);

  // Untied Llama without lm_head.
  broken_copy("tiny-llama", dir.path, [](auto& ts) {
    std::erase_if(ts, [](auto& t) { return t.name == "lm_head.weight"; });
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "'lm_head.weight' not found"), m);

  // Wrong shape: k_proj stored as [64, 32] where GQA wants [32, 64].
  broken_copy("tiny-llama", dir.path, [](auto& ts) {
    for (auto& t : ts)
      if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {64, 32};
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "model.layers.0.self_attn.k_proj.weight in " + st +
                                ": shape [64, 32], expected [32, 64]"),
                m);

  // A config that disagrees with the tensors (wrong hidden size) is a shape error too.
  broken_copy("tiny-gpt2", dir.path, {}, [](auto& c) { c["n_embd"] = 32; });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "transformer.wte.weight in " + st), m);

  // config.json with fewer layers than the weights (issue 9: loaded silently, dropping one).
  broken_copy("tiny-llama", dir.path, {}, [](auto& c) { c["num_hidden_layers"] = 1; });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "tensor 'model.layers.1."), m);
  CHECK_MESSAGE(contains(m, "belongs to layer 1, but config.json says the model has 1 layers"), m);
  broken_copy("tiny-gpt2", dir.path, {}, [](auto& c) { c["n_layer"] = 1; });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "'transformer.h.1."), m);

  // An eos (or bos) token outside the vocabulary (issue 9: loaded silently).
  broken_copy("tiny-llama", dir.path, {}, [](auto& c) { c["eos_token_id"] = 100000; });
  CHECK(error_of([&] { zf::load_hf_weights(dir.path); }) ==
        "hf: " + cfg_file + ": \"eos_token_id\" is 100000, outside the vocabulary of 458 tokens");

  // No safetensors at all.
  broken_copy("tiny-llama", dir.path, {}, [](auto&) {});
  fs::remove(dir / "model.safetensors");
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "no *.safetensors"), m);
}

// Issue 9: sizes the machine cannot hold were found by a std::bad_alloc (or an out-of-memory
// kill) when the fp32 buffer was sized; sizes whose products overflow an int wrapped silently.
// Both are refused from config.json alone, naming it and its keys, before a weight is read.
TEST_CASE("hf loader: a config.json too large for memory, or overflowing, is refused by name") {
  temp_dir dir("hf_huge");
  const std::string cfg_file = (dir / "config.json").string();
  broken_copy("tiny-llama", dir.path, {}, [](auto& c) {
    c["hidden_size"] = 65536;
    c["num_attention_heads"] = 64;
    c["num_key_value_heads"] = 8;
    c["num_hidden_layers"] = 400;
    c["intermediate_size"] = 262144;
  });
  std::string m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "hf: " + cfg_file +
                                ": vocab_size = 458, hidden_size = 65536, "
                                "num_hidden_layers = 400: the model has 2.45e+13 parameters"),
                m);
  CHECK_MESSAGE(contains(m, "89.1 TiB as fp32, but this machine has"), m);

  broken_copy("tiny-gpt2", dir.path, {}, [](auto& c) {
    c["vocab_size"] = 1 << 30;
    c["n_embd"] = 4096;
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "hf: " + cfg_file +
                                ": vocab_size = 1073741824, n_embd = 4096, "
                                "n_layer = 2: the model has 4.4e+12 parameters, 16 TiB as fp32"),
                m);

  // q | k | v columns past INT_MAX
  broken_copy("tiny-llama", dir.path, {}, [](auto& c) {
    c["hidden_size"] = 1 << 30;
    c["num_attention_heads"] = 1;
    c["num_key_value_heads"] = 1;
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "hf: " + cfg_file + ": model: n_head 1 and n_kv_head 1"), m);
  CHECK_MESSAGE(contains(m, "attention columns"), m);
  // GPT-2's default MLP width, 4 n_embd, past INT_MAX
  broken_copy("tiny-gpt2", dir.path, {}, [](auto& c) {
    c["n_embd"] = 1 << 30;
    c["n_head"] = 1;
  });
  m = error_of([&] { zf::load_hf_weights(dir.path); });
  CHECK_MESSAGE(contains(m, "hf: " + cfg_file + ": \"n_embd\" is 1073741824"), m);
}

TEST_CASE("hf loader: tiny-llama31 rope_scaling llama3 and tied head") {
  const auto w = zf::load_hf_weights(kHf / "tiny-llama31");
  const auto& c = w.cfg;
  CHECK(c.arch == zf::model_arch::llama);
  CHECK(c.name == "tiny-llama31");
  CHECK(c.rope.type == zf::rope_scaling::kind::llama3);
  CHECK(c.rope.factor == 8.0);
  CHECK(c.rope.low_freq_factor == 1.0);
  CHECK(c.rope.high_freq_factor == 4.0);
  CHECK(c.rope.original_max_positions == 32);
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.tied_head);
  CHECK(w.head == w.tok_emb);
  const auto raw = safetensors_file::open(kHf / "tiny-llama31" / "model.safetensors");
  CHECK(raw.find("lm_head.weight") == nullptr);
  CHECK(equal(w.tok_emb, raw.to_f32("model.embed_tokens.weight")));
  // No rope_scaling (tiny-llama has null) is no scaling.
  CHECK(zf::load_hf_weights(kHf / "tiny-llama").cfg.rope.type == zf::rope_scaling::kind::none);
}

TEST_CASE("hf loader: rope_scaling types, the legacy \"type\" key and malformed fields") {
  temp_dir dir("hf_rope");
  const std::string file = (dir / "config.json").string();
  auto load_with = [&](const nlohmann::json& rs) {
    broken_copy("tiny-llama31", dir.path, {}, [&](auto& c) { c["rope_scaling"] = rs; });
    return zf::load_hf_weights(dir.path).cfg.rope;
  };
  auto error_with = [&](const nlohmann::json& rs) { return error_of([&] { load_with(rs); }); };
  using kind = zf::rope_scaling::kind;
  CHECK(load_with(nullptr).type == kind::none);
  CHECK(load_with({{"rope_type", "default"}}).type == kind::none);
  auto lin = load_with({{"type", "linear"}, {"factor", 2}});  // before transformers 4.43
  CHECK(lin.type == kind::linear);
  CHECK(lin.factor == 2.0);
  lin = load_with({{"rope_type", "linear"}, {"type", "linear"}, {"factor", 4.0}});
  CHECK(lin.type == kind::linear);
  CHECK(lin.factor == 4.0);
  const nlohmann::json llama3 = {{"rope_type", "llama3"},
                                 {"factor", 32.0},
                                 {"low_freq_factor", 1.0},
                                 {"high_freq_factor", 4.0},
                                 {"original_max_position_embeddings", 8192}};
  const auto l3 = load_with(llama3);
  CHECK(l3.type == kind::llama3);
  CHECK(l3.factor == 32.0);
  CHECK(l3.original_max_positions == 8192);

  const std::string only = ", only \"llama3\", \"linear\" or \"default\" is supported";
  CHECK(error_with({{"type", "dynamic"}, {"factor", 2.0}}) ==
        "hf: " + file + ": \"rope_scaling.type\" is \"dynamic\"" + only);
  CHECK(error_with({{"rope_type", "longrope"}}) ==
        "hf: " + file + ": \"rope_scaling.rope_type\" is \"longrope\"" + only);
  CHECK(error_with({{"factor", 2.0}}) ==
        "hf: " + file +
            ": missing \"rope_scaling.rope_type\" (\"llama3\", \"linear\" or \"default\")");
  CHECK(error_with({{"rope_type", "llama3"}, {"type", "linear"}, {"factor", 2.0}}) ==
        "hf: " + file +
            ": \"rope_scaling.rope_type\" is \"llama3\" but \"rope_scaling.type\" is "
            "\"linear\"");
  CHECK(error_with("llama3") ==
        "hf: " + file + ": \"rope_scaling\" is \"llama3\", expected an object or null");
  CHECK(error_with({{"rope_type", "linear"}}) ==
        "hf: " + file + ": missing \"rope_scaling.factor\" (a positive number)");
  auto with = [&](const char* key, const nlohmann::json& v) {
    auto j = llama3;
    if (v.is_null())
      j.erase(key);
    else
      j[key] = v;
    return error_with(j);
  };
  CHECK(with("factor", "8") ==
        "hf: " + file + ": \"rope_scaling.factor\" is \"8\", expected a positive number");
  CHECK(with("factor", 0.0) ==
        "hf: " + file + ": \"rope_scaling.factor\" is 0.0, expected a positive number");
  CHECK(with("low_freq_factor", nullptr) ==
        "hf: " + file + ": missing \"rope_scaling.low_freq_factor\" (a positive number)");
  CHECK(with("high_freq_factor", nullptr) ==
        "hf: " + file + ": missing \"rope_scaling.high_freq_factor\" (a positive number)");
  CHECK(with("original_max_position_embeddings", nullptr) ==
        "hf: " + file +
            ": missing \"rope_scaling.original_max_position_embeddings\" (a positive integer)");
  CHECK(with("original_max_position_embeddings", 8192.5) ==
        "hf: " + file +
            ": \"rope_scaling.original_max_position_embeddings\" is 8192.5, expected a positive "
            "integer");
  CHECK(with("high_freq_factor", 1.0) ==
        "hf: " + file +
            ": \"rope_scaling.high_freq_factor\" is 1.0, expected more than "
            "\"rope_scaling.low_freq_factor\" (1.0)");
}
