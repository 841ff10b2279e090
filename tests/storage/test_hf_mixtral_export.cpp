// MoE checkpoints <-> Hugging Face Mixtral folders: the tiny Mixtral fixture
// (tests/golden/hf/tiny-mixtral, checked against the PyTorch twin in test_lm_hf) imports into a
// checkpoint, exports back to MixtralForCausalLM with the fixture's tensors bit for bit, and the
// export loads to the same flat parameters; MoE models Mixtral cannot hold are refused saying why.
#include <doctest/doctest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

const fs::path k_fixture = ZF_SOURCE_DIR "/tests/golden/hf/tiny-mixtral";

// A checkpoint of model m (initialised from seed 5) under root.
fs::path save_moe(const fs::path& root, const zf::model_config& m) {
  zf::run_config rc;
  rc.model = m;
  rc.train.seq_len = 16;
  zf::validate(rc);
  zf::transformer model(m);
  model.init_weights(5);
  const zf::param_layout L = zf::layout_of(m);
  st::checkpoint_view v;
  v.step = 1;
  v.config_toml = zf::to_toml(rc);
  v.layout = &L;
  v.params = model.params().data();
  return st::save_checkpoint(root, v, 1);
}

zf::model_config llama_moe() {
  zf::model_config m;
  m.arch = "llama";
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.n_positions = 16;
  m.vocab_size = 50;
  m.tied_head = false;
  m.moe.num_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_intermediate = 24;
  return m;
}

}  // namespace

TEST_CASE(
    "mixtral export: the fixture imports and exports back to the same tensors and flat bits") {
  temp_dir d("mixtral-export");
  const fs::path ck = st::import_safetensors(k_fixture / "model.safetensors", d / "run");
  const fs::path file = d / "hf" / "model.safetensors";
  const fs::path cj = st::export_safetensors(ck.parent_path(), file);
  auto c = nlohmann::json::parse(st::read_text_file(cj));
  CHECK(c["model_type"] == "mixtral");
  CHECK(c["architectures"][0] == "MixtralForCausalLM");
  CHECK(c["num_local_experts"] == 4);
  CHECK(c["num_experts_per_tok"] == 2);
  CHECK(c["intermediate_size"] == 96);
  CHECK(c["num_key_value_heads"] == 2);
  // Every tensor of the fixture (BF16) is in the export (F32) with the same values.
  auto fixture = st::safetensors_file::open((k_fixture / "model.safetensors").string());
  auto ours = st::safetensors_file::open(file.string());
  std::size_t n = 0;
  for (const auto& t : fixture.tensors()) {
    CAPTURE(t.name);
    REQUIRE(ours.find(t.name) != nullptr);
    CHECK(fixture.to_f32(t.name) == ours.to_f32(t.name));
    ++n;
  }
  CHECK(n == ours.tensors().size());
  CHECK(n == 3 + 2 * (6 + 1 + 4 * 3));  // embed, norm, head; per layer 6 + gate + 4 experts x 3
  // And the export loads back to the same flat parameters.
  const zf::hf_model a = zf::load_hf_model(k_fixture), b = zf::load_hf_model(d / "hf");
  REQUIRE(a.flat.size() == b.flat.size());
  CHECK(std::equal(a.flat.data(), a.flat.data() + a.flat.size(), b.flat.data()));
  CHECK(b.spec.moe.experts == a.spec.moe.experts);
}

TEST_CASE("mixtral export: MoE models Mixtral cannot hold are refused saying why") {
  temp_dir d("mixtral-refuse");
  struct bad {
    const char* what;
    std::function<void(zf::model_config&)> set;
    const char* says;
  };
  const bad cases[] = {
      {"gpt2",
       [](zf::model_config& m) {
         m.arch = "gpt2";
         m.tied_head = true;
       },
       "GPT-2 MoE"},
      {"interval", [](zf::model_config& m) { m.moe.interval = 2; }, "not every layer"},
      {"residual", [](zf::model_config& m) { m.moe.residual = true; }, "residual"},
      {"sigmoid", [](zf::model_config& m) { m.moe.router = "sigmoid"; }, "sigmoid"},
      {"top1", [](zf::model_config& m) { m.moe.top_k = 1; }, "renormalised"},
      {"bias", [](zf::model_config& m) { m.moe.bias_update_rate = 0.001; }, "routing bias"},
      {"scale", [](zf::model_config& m) { m.moe.gate_scale = 2; }, "gate scale"},
  };
  for (const bad& b : cases) {
    CAPTURE(b.what);
    auto m = llama_moe();
    b.set(m);
    const fs::path ck = save_moe(d / b.what, m);
    const fs::path out = d / (std::string("x-") + b.what) / "model.safetensors";
    const std::string e = error_of([&] { st::export_safetensors(ck.parent_path(), out); });
    CHECK(contains(e, "Mixtral cannot hold"));
    CHECK(contains(e, b.says));
    CHECK_FALSE(fs::exists(out));
  }
  // The plain Llama MoE is a Mixtral.
  const fs::path ck = save_moe(d / "ok", llama_moe());
  CHECK_NOTHROW(st::export_safetensors(ck.parent_path(), d / "y" / "m.safetensors"));
}

TEST_CASE("mixtral export: a Mixtral with one expert per token is refused by the loader") {
  temp_dir d("mixtral-top1");
  fs::create_directories(d / "m");
  auto c = nlohmann::json::parse(st::read_text_file(k_fixture / "config.json"));
  c["num_experts_per_tok"] = 1;
  std::ofstream(d / "m" / "config.json") << c.dump();
  fs::copy_file(k_fixture / "model.safetensors", d / "m" / "model.safetensors");
  const std::string e = error_of([&] { zf::load_hf_model(d / "m"); });
  CHECK(contains(e, "num_experts_per_tok"));
  CHECK(contains(e, "2 to num_local_experts"));
}
