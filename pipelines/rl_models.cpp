#include "pipelines/rl_models.hpp"

#include <fmt/format.h>

#include <fstream>
#include <random>

#include "pipelines/pipeline.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/rl/rl_data.hpp"
#include "runtime/text/byte_vocab.hpp"
#include "runtime/train/loss_scaler.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"

namespace zf {
namespace fs = std::filesystem;

namespace {

// The checkpoint's config and parameters (by name) from a run folder, checkpoints/ or a step.
struct loaded {
  run_config cfg;
  param_layout layout;
  std::vector<float> params;
};

loaded load_params(const std::string& dir) {
  const auto head = storage::read_manifest(dir);
  loaded l;
  apply_toml(l.cfg, head.config_toml, (head.dir / "manifest").string());
  l.layout = layout_of(l.cfg.model);
  auto ck = storage::load_checkpoint(head.dir, l.layout);
  l.params.assign(ck.params.data(), ck.params.data() + ck.params.size());
  return l;
}

void copy_by_name(const param_layout& from, const float* src, transformer& to) {
  for (auto& p : to.layout().params)
    if (const param_info* q = from.find(p.name); q && q->numel == p.numel)
      std::copy_n(src + q->offset, p.numel, to.params().data() + p.offset);
}

}  // namespace

rl_setup setup_rl(run_config cfg, const fs::path& out, const std::string& checkpoint) {
  rl_setup s;
  fs::create_directories(out);
  const fs::path tok_file = fs::absolute(out / "tokenizer.json");
  std::string tok_text = byte_level_tokenizer_json();
  std::string tok_config;  // tokenizer_config.json beside a Hugging Face tokenizer.json
  int eos = -1;
  if (!checkpoint.empty() && !cfg.model.init_hf.empty())
    fail("rl: give a zeroflow checkpoint or a Hugging Face folder (model.init_hf), not both");
  if (!cfg.model.init_hf.empty()) {  // a Hugging Face folder: its config, weights and tokenizer
    const fs::path dir = cfg.model.init_hf;
    hf_model h = load_hf_model(dir);
    cfg.model = config_of(h.spec);
    cfg.model.init_hf = dir.string();
    tok_text = storage::read_text_file(dir / "tokenizer.json");
    if (fs::exists(dir / "tokenizer_config.json"))
      tok_config = storage::read_text_file(dir / "tokenizer_config.json");
    eos = h.spec.eos_id;
    s.init.assign(h.flat.data(), h.flat.data() + h.flat.size());
  }
  if (!checkpoint.empty()) {
    loaded l = load_params(checkpoint);
    cfg.model = l.cfg.model;
    cfg.model.value_head = false;
    const fs::path src = fs::is_directory(l.cfg.data.tokenizer)
                             ? fs::path(l.cfg.data.tokenizer) / "tokenizer.json"
                             : fs::path(l.cfg.data.tokenizer);
    tok_text = storage::read_text_file(src);
    auto tmp = std::make_unique<transformer>(spec_of(cfg.model), true, false);
    copy_by_name(l.layout, l.params.data(), *tmp);
    s.init.assign(tmp->params().data(), tmp->params().data() + tmp->params().size());
  }
  if (!fs::exists(tok_file) || storage::read_text_file(tok_file) != tok_text) {
    std::ofstream f(tok_file);
    f << tok_text;
    if (!f) fail("rl: cannot write {}", tok_file.string());
  }
  if (!tok_config.empty()) {
    std::ofstream f(out / "tokenizer_config.json");
    f << tok_config;
    if (!f) fail("rl: cannot write {}", (out / "tokenizer_config.json").string());
  }
  s.tok = std::make_unique<tokenizer>(tokenizer::load_hf(tok_file));
  cfg.data.tokenizer = tok_file.parent_path().string();
  if (checkpoint.empty() && cfg.model.init_hf.empty()) cfg.model.vocab_size = s.tok->vocab_size();
  if (cfg.model.vocab_size < s.tok->vocab_size())
    fail("model.vocab_size: {} is smaller than the tokenizer's {}", cfg.model.vocab_size,
         s.tok->vocab_size());
  validate(cfg);
  s.spec = spec_of(cfg.model);
  s.spec.eos_id = eos >= 0 ? eos : s.tok->eot();
  if (s.spec.eos_id < 0)
    fail("rl: the tokenizer has no end-of-text token, so completions could never end");
  rl::task_options topt;
  topt.min_len = cfg.rlhf.task_min_len;
  topt.max_len = cfg.rlhf.task_max_len;
  if (topt.max_len < topt.min_len)
    fail("rlhf.task_max_len: expected >= rlhf.task_min_len ({}), got {}", topt.min_len,
         topt.max_len);
  s.task = rl::make_task(cfg.rlhf.task, topt);
  s.cfg = std::move(cfg);
  return s;
}

kernels::precision rl_precision(const run_config& cfg) {
  const kernels::precision p = precision_of(cfg.train);
  if (p == kernels::precision::f16)
    fail(
        "train.precision = \"fp16\" is not supported by the RLHF commands (their steps have no "
        "loss scaler): use \"bf16\" or \"fp32\"");
  return p;
}

std::unique_ptr<transformer> make_model(const rl_setup& s, bool value_head, uint64_t seed) {
  model_spec spec = s.spec;
  spec.value_head = value_head;
  auto m = std::make_unique<transformer>(spec);
  m->set_precision(rl_precision(s.cfg));
  m->init_weights(seed);
  if (!s.init.empty()) copy_by_name(make_layout(s.spec), s.init.data(), *m);
  return m;
}

std::vector<rl::sft_pair> sft_pairs(const rl_setup& s) {
  const run_config& c = s.cfg;
  std::vector<rl::sft_record> records;
  if (!c.rlhf.sft_data.empty()) {
    records = rl::read_sft(c.rlhf.sft_data);
  } else {  // the task's, a share sft_noise of them answered wrong (seeded): the two commonest
            // mistakes (copying instead of reversing, one character wrong), alternately
    const uint64_t seed = static_cast<uint64_t>(c.train.seed) ^ 0x5f7ull;
    std::mt19937_64 rng(seed);
    int wrong = 0;
    for (auto& smp : rl::make_samples(*s.task, seed, 4096)) {
      const bool bad = double(rng() >> 11) * 0x1.0p-53 < c.rlhf.sft_noise;
      records.push_back(
          {smp.prompt,
           bad ? rl::mistake(smp.answer, wrong++ % 2, rng, s.task->options().letters) : smp.answer,
           0});
    }
  }
  std::vector<rl::sft_pair> pairs;
  for (auto& r : records) {
    rl::sft_pair p{s.tok->encode_prompt(r.prompt), s.tok->encode(r.response)};
    p.response.push_back(s.tok->eot());
    pairs.push_back(std::move(p));
  }
  return pairs;
}

std::vector<rl::preference_ids> preference_pairs(const rl_setup& s, int count) {
  const run_config& c = s.cfg;
  const auto records = c.rlhf.preference_data.empty()
                           ? rl::preferences_from_task(
                                 *s.task, static_cast<uint64_t>(c.train.seed) ^ 0x9e7ull, count)
                           : rl::read_preferences(c.rlhf.preference_data);
  std::vector<rl::preference_ids> out;
  for (auto& r : records) {
    rl::preference_ids p{s.tok->encode_prompt(r.prompt), s.tok->encode(r.chosen),
                         s.tok->encode(r.rejected)};
    p.chosen.push_back(s.tok->eot());
    p.rejected.push_back(s.tok->eot());
    out.push_back(std::move(p));
  }
  return out;
}

std::string save_model(const rl_setup& s, const fs::path& out, transformer& m, const adamw* opt,
                       int step, const nlohmann::json& state) {
  run_config cfg = s.cfg;
  cfg.model.value_head = m.spec().value_head;
  storage::checkpoint_view v;
  v.step = step;
  v.config_toml = to_toml(cfg);
  v.layout = &m.layout();
  v.params = m.params().data();
  if (opt) {
    v.exp_avg = const_cast<adamw*>(opt)->m().data();
    v.exp_avg_sq = const_cast<adamw*>(opt)->v().data();
  }
  v.state = state;
  return storage::save_checkpoint(out / "checkpoints", v).string();
}

std::unique_ptr<transformer> load_reward_model(const rl_setup& s, const std::string& dir) {
  loaded l = load_params(dir);
  if (!l.cfg.model.value_head)
    fail("rlhf.reward_model: {} has no value head (train one with `zeroflow reward`)", dir);
  run_config want = s.cfg;
  want.model.value_head = true;
  if (to_toml(run_config{.model = l.cfg.model}) != to_toml(run_config{.model = want.model}))
    fail("rlhf.reward_model: {} is not of the policy's shape and vocabulary", dir);
  model_spec spec = s.spec;
  spec.value_head = true;
  auto m = std::make_unique<transformer>(spec, true, false);
  m->set_precision(rl_precision(s.cfg));
  copy_by_name(l.layout, l.params.data(), *m);
  return m;
}

void write_json_file(const fs::path& p, const nlohmann::json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) fail("cannot write {}", p.string());
}

}  // namespace zf
