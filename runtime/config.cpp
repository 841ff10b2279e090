#include "runtime/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <charconv>
#include <fstream>
#include <functional>
#include <sstream>

#include "runtime/error.hpp"
#include "runtime/model_spec.hpp"

namespace zf {
namespace {

// One declared key: where it lives in run_config, its type and range, its help text.
struct key {
  std::string name;
  char type;  // 'i' integer, 'f' float, 's' string, 'b' bool
  std::function<void*(run_config&)> ref;
  double lo, hi;  // inclusive range for numbers
  std::string help;
};

template <class T>
T& as(run_config& c, const key& k) {
  return *static_cast<T*>(k.ref(c));
}

#define ZF_KEY(path, field, type, lo, hi, help)                               \
  key {                                                                       \
    path, type, [](run_config& c) -> void* { return &c.field; }, lo, hi, help \
  }

const std::vector<key>& keys() {
  static const std::vector<key> k = {
      ZF_KEY("model.arch", model.arch, 's', 0, 0, "architecture: gpt2 | llama"),
      ZF_KEY("model.n_layer", model.n_layer, 'i', 1, 256, "transformer blocks"),
      ZF_KEY("model.n_head", model.n_head, 'i', 1, 256, "attention heads (divides n_embd)"),
      ZF_KEY("model.n_embd", model.n_embd, 'i', 8, 65536, "embedding width"),
      ZF_KEY("model.n_positions", model.n_positions, 'i', 1, 1 << 20, "max context length"),
      ZF_KEY("model.vocab_size", model.vocab_size, 'i', 2, 1 << 22,
             "vocabulary size (>= the tokenizer's)"),
      ZF_KEY("model.n_kv_head", model.n_kv_head, 'i', 0, 256,
             "llama: key/value heads (grouped-query attention); 0 = n_head"),
      ZF_KEY("model.head_dim", model.head_dim, 'i', 0, 4096, "per-head width; 0 = n_embd / n_head"),
      ZF_KEY("model.intermediate", model.intermediate, 'i', 0, 1 << 20,
             "MLP width; 0 = 4 n_embd (gpt2), 8/3 n_embd rounded up to 32 (llama)"),
      ZF_KEY("model.norm_eps", model.norm_eps, 'f', 1e-12, 1, "LayerNorm / RMSNorm epsilon"),
      ZF_KEY("model.rope_theta", model.rope_theta, 'f', 1, 1e12, "llama: RoPE base"),
      ZF_KEY("model.rope_scaling.type", model.rope_type, 's', 0, 0,
             "llama: none | linear | llama3 (as Hugging Face rope_scaling)"),
      ZF_KEY("model.rope_scaling.factor", model.rope_factor, 'f', 1e-6, 1e6,
             "llama: rope_scaling factor"),
      ZF_KEY("model.rope_scaling.low_freq_factor", model.rope_low_freq_factor, 'f', 1e-6, 1e6,
             "llama3 scaling: low_freq_factor"),
      ZF_KEY("model.rope_scaling.high_freq_factor", model.rope_high_freq_factor, 'f', 1e-6, 1e6,
             "llama3 scaling: high_freq_factor (> low_freq_factor)"),
      ZF_KEY("model.rope_scaling.original_max_positions", model.rope_original_max_positions, 'i', 0,
             1 << 24, "llama3 scaling: original_max_position_embeddings"),
      ZF_KEY("model.tied_head", model.tied_head, 'b', 0, 1,
             "the LM head shares the token embedding"),
      ZF_KEY("train.steps", train.steps, 'i', 1, 1e9, "optimizer steps"),
      ZF_KEY("train.batch_size", train.batch_size, 'i', 1, 1 << 16, "sequences per micro-batch"),
      ZF_KEY("train.seq_len", train.seq_len, 'i', 2, 1 << 20, "tokens per sequence"),
      ZF_KEY("train.grad_accum", train.grad_accum, 'i', 1, 1 << 16,
             "micro-batches per optimizer step"),
      ZF_KEY("train.lr", train.lr, 'f', 1e-12, 10, "peak learning rate"),
      ZF_KEY("train.min_lr_ratio", train.min_lr_ratio, 'f', 0, 1, "final lr / peak lr (cosine)"),
      ZF_KEY("train.warmup", train.warmup, 'i', 0, 1e9, "linear warm-up steps"),
      ZF_KEY("train.weight_decay", train.weight_decay, 'f', 0, 10,
             "AdamW decay on matrices and embeddings"),
      ZF_KEY("train.beta1", train.beta1, 'f', 0, 0.999999, "AdamW beta1"),
      ZF_KEY("train.beta2", train.beta2, 'f', 0, 0.999999, "AdamW beta2"),
      ZF_KEY("train.eps", train.eps, 'f', 1e-30, 1, "AdamW epsilon"),
      ZF_KEY("train.grad_clip", train.grad_clip, 'f', 0, 1e9, "max global grad norm; 0 = off"),
      ZF_KEY("train.seed", train.seed, 'i', 0, 9.2e18, "seed for weights and data order"),
      ZF_KEY("train.checkpoint_every", train.checkpoint_every, 'i', 0, 1e9,
             "steps between checkpoints; 0 = at the end only"),
      ZF_KEY("train.keep_checkpoints", train.keep_checkpoints, 'i', 1, 1e6,
             "checkpoints kept on disk"),
      ZF_KEY("train.eval_every", train.eval_every, 'i', 0, 1e9,
             "steps between validation passes; 0 = never"),
      ZF_KEY("train.eval_batches", train.eval_batches, 'i', 1, 1e6, "batches per validation"),
      ZF_KEY("train.prefetch", train.prefetch, 'i', 1, 64, "batches the sampler runs ahead"),
      ZF_KEY("train.threads", train.threads, 'i', 0, 1024, "compute threads; 0 = all cores"),
      ZF_KEY("train.ranks", train.ranks, 'i', 1, 64,
             "data-parallel ranks (threads of one process); batch_size is per rank"),
      ZF_KEY("train.zero.stage", train.zero_stage, 'i', 0, 3,
             "ZeRO stage: 0 DP, 1 +optimizer state, 2 +gradients, 3 +parameters sharded"),
      ZF_KEY("train.sample_tokens", train.sample_tokens, 'i', 0, 1 << 20,
             "tokens sampled at the end of a run"),
      ZF_KEY("data.corpus", data.corpus, 's', 0, 0,
             "\"moby-dick\", a UTF-8 .txt file or a .tok token shard"),
      ZF_KEY("data.tokenizer", data.tokenizer, 's', 0, 0, "tokenizer: gpt2"),
      ZF_KEY("data.data_dir", data.data_dir, 's', 0, 0,
             "folder with the fetched corpus and tokenizer; empty = the build's"),
      ZF_KEY("data.val_fraction", data.val_fraction, 'f', 0, 0.5,
             "tail fraction of the corpus held out"),
  };
  return k;
}

std::string node_text(const toml::node& n) {
  std::ostringstream os;
  n.visit([&](auto&& v) { os << v; });
  return os.str();
}

const key* find_key(const std::string& name) {
  for (auto& k : keys())
    if (k.name == name) return &k;
  return nullptr;
}

std::string fmt_num(double v) {
  if (v == static_cast<int64_t>(v) && std::abs(v) < 1e15) return fmt::format("{}", (int64_t)v);
  return fmt::format("{}", v);
}

void check_range(const key& k, double v, const std::string& given) {
  if (!(v >= k.lo && v <= k.hi))  // also refuses NaN
    fail("{}: expected {}..{}, got {}", k.name, fmt_num(k.lo), fmt_num(k.hi), given);
}

void set_number(run_config& c, const key& k, double v, const std::string& given) {
  check_range(k, v, given);
  if (k.type == 'i') {
    if (v != static_cast<double>(static_cast<int64_t>(v)))
      fail("{}: expected an integer, got {}", k.name, given);
    if (k.ref(c) == &c.train.seed)
      as<int64_t>(c, k) = static_cast<int64_t>(v);
    else
      as<int>(c, k) = static_cast<int>(v);
  } else {
    as<double>(c, k) = v;
  }
}

// Integers are set exactly (a seed above 2^53 must not be rounded through a double).
void set_integer(run_config& c, const key& k, int64_t v, const std::string& given) {
  if (!(double(v) >= k.lo && double(v) <= k.hi)) check_range(k, double(v), given);
  if (k.ref(c) == &c.train.seed)
    as<int64_t>(c, k) = v;
  else
    as<int>(c, k) = static_cast<int>(v);
}

void set_from_toml(run_config& c, const key& k, const toml::node& n, const std::string& where) {
  if (k.type == 'b') {
    if (!n.is_boolean())
      fail("{}: expected true or false, got {} ({})", k.name, node_text(n), where);
    as<bool>(c, k) = *n.value<bool>();
    return;
  }
  if (k.type == 's') {
    auto s = n.value<std::string>();
    if (!s || !n.is_string()) fail("{}: expected a string ({})", k.name, where);
    as<std::string>(c, k) = *s;
    return;
  }
  if (n.is_integer() && k.type == 'i') {
    set_integer(c, k, *n.value<int64_t>(), node_text(n));
    return;
  }
  std::optional<double> v;
  if (n.is_integer())
    v = static_cast<double>(*n.value<int64_t>());
  else if (n.is_floating_point() && k.type == 'f')
    v = *n.value<double>();
  if (!v)
    fail("{}: expected {}, got {} ({})", k.name, k.type == 'i' ? "an integer" : "a number",
         node_text(n), where);
  set_number(c, k, *v, node_text(n));
}

void walk(run_config& c, const toml::table& t, const std::string& prefix,
          const std::string& source) {
  for (auto&& [name, node] : t) {
    std::string path =
        prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
    if (auto* sub = node.as_table()) {
      walk(c, *sub, path, source);
      continue;
    }
    const key* k = find_key(path);
    if (!k) fail("unknown config key '{}' in {}", path, source);
    set_from_toml(c, *k, node, source);
  }
}

}  // namespace

void apply_toml(run_config& cfg, const std::string& text, const std::string& source) {
  toml::table t;
  try {
    t = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    auto& b = e.source().begin;
    fail("{}:{}:{}: TOML parse error: {}", source, b.line, b.column, e.description());
  }
  walk(cfg, t, "", source);
}

void apply_override(run_config& cfg, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set {}: expected key=value (for example train.lr=1e-3)", assignment);
  std::string name = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  const key* k = find_key(name);
  if (!k) fail("unknown config key '{}' in --set", name);
  if (k->type == 'b') {
    if (value != "true" && value != "false")
      fail("{}: expected true or false, got '{}'", name, value);
    as<bool>(cfg, *k) = value == "true";
    return;
  }
  if (k->type == 's') {
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    as<std::string>(cfg, *k) = value;
    return;
  }
  if (k->type == 'i') {
    int64_t iv = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), iv);
    if (ec == std::errc() && p == value.data() + value.size()) {
      set_integer(cfg, *k, iv, value);
      return;
    }
  }
  double v = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || p != value.data() + value.size())
    fail("{}: expected {}, got '{}'", name, k->type == 'i' ? "an integer" : "a number", value);
  set_number(cfg, *k, v, value);
}

void validate(const run_config& c) {
  run_config tmp = c;
  for (auto& k : keys()) {
    if (k.type == 'i') {
      double v = k.ref(tmp) == &tmp.train.seed ? (double)as<int64_t>(tmp, k) : as<int>(tmp, k);
      check_range(k, v, fmt_num(v));
    } else if (k.type == 'f') {
      check_range(k, as<double>(tmp, k), fmt_num(as<double>(tmp, k)));
    }
  }
  const model_config& m = c.model;
  if (m.arch != "gpt2" && m.arch != "llama")
    fail("model.arch: expected \"gpt2\" or \"llama\", got \"{}\"", m.arch);
  if (m.rope_type != "none" && m.rope_type != "linear" && m.rope_type != "llama3")
    fail("model.rope_scaling.type: expected \"none\", \"linear\" or \"llama3\", got \"{}\"",
         m.rope_type);
  if (m.head_dim == 0 && m.n_embd % m.n_head != 0)
    fail("model.n_head: expected a divisor of model.n_embd ({}), got {}", m.n_embd, m.n_head);
  if (m.arch == "gpt2" && (m.n_kv_head != 0 && m.n_kv_head != m.n_head))
    fail("model.n_kv_head: gpt2 has no grouped-query attention, expected 0 or {}, got {}", m.n_head,
         m.n_kv_head);
  if (m.n_kv_head != 0 && m.n_head % m.n_kv_head != 0)
    fail("model.n_kv_head: expected a divisor of model.n_head ({}), got {}", m.n_head, m.n_kv_head);
  if (m.rope_type == "llama3" &&
      (m.rope_original_max_positions < 1 || m.rope_high_freq_factor <= m.rope_low_freq_factor))
    fail(
        "model.rope_scaling: llama3 needs original_max_positions >= 1 and high_freq_factor > "
        "low_freq_factor, got {} and {} <= {}",
        m.rope_original_max_positions, m.rope_high_freq_factor, m.rope_low_freq_factor);
  try {
    check_spec(spec_of(m));
  } catch (const error& e) {
    fail("model: {}", e.what());
  }
  if (c.train.seq_len > c.model.n_positions)
    fail("train.seq_len: expected at most model.n_positions ({}), got {}", c.model.n_positions,
         c.train.seq_len);
  if (c.data.tokenizer != "gpt2")
    fail("data.tokenizer: expected \"gpt2\", got \"{}\"", c.data.tokenizer);
  if (c.data.corpus.empty()) fail("data.corpus: expected a corpus name or path, got \"\"");
}

std::string to_toml(const run_config& c) {
  run_config tmp = c;
  std::string out, section;
  for (auto& k : keys()) {
    auto dot = k.name.find('.');
    std::string sec = k.name.substr(0, dot), leaf = k.name.substr(dot + 1);
    if (sec != section) {
      out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", sec);
      section = sec;
    }
    std::string v;
    if (k.type == 'b') {
      v = as<bool>(tmp, k) ? "true" : "false";
    } else if (k.type == 's') {
      std::ostringstream os;
      os << toml::value<std::string>(as<std::string>(tmp, k));
      v = os.str();
    } else if (k.type == 'i') {
      v = k.ref(tmp) == &tmp.train.seed ? fmt::format("{}", as<int64_t>(tmp, k))
                                        : fmt::format("{}", as<int>(tmp, k));
    } else {
      v = fmt::format("{}", as<double>(tmp, k));
      if (v.find_first_of(".en") == std::string::npos) v += ".0";
    }
    out += fmt::format("{} = {}  # {}\n", leaf, v, k.help);
  }
  return out;
}

model_spec spec_of(const model_config& m) {
  model_spec s;
  s.arch = m.arch == "llama" ? model_arch::llama : model_arch::gpt2;
  s.vocab_size = m.vocab_size;
  s.hidden = m.n_embd;
  s.n_layer = m.n_layer;
  s.n_head = m.n_head;
  s.n_kv_head = m.n_kv_head ? m.n_kv_head : m.n_head;
  s.head_dim = m.head_dim ? m.head_dim : m.n_embd / m.n_head;
  const bool llama = s.arch == model_arch::llama;
  s.intermediate = m.intermediate ? m.intermediate
                   : llama        ? (8 * m.n_embd / 3 + 31) / 32 * 32
                                  : 4 * m.n_embd;
  s.max_positions = m.n_positions;
  s.norm_eps = static_cast<float>(m.norm_eps);
  s.rope_theta = static_cast<float>(m.rope_theta);
  s.rope.type = m.rope_type == "linear"   ? rope_scaling::kind::linear
                : m.rope_type == "llama3" ? rope_scaling::kind::llama3
                                          : rope_scaling::kind::none;
  s.rope.factor = m.rope_factor;
  s.rope.low_freq_factor = m.rope_low_freq_factor;
  s.rope.high_freq_factor = m.rope_high_freq_factor;
  s.rope.original_max_positions = m.rope_original_max_positions;
  s.tied_head = m.tied_head;
  s.eos_id = m.vocab_size > 50256 ? 50256 : -1;  // GPT-2's <|endoftext|> (the gpt2 tokenizer)
  return s;
}

run_config load_config(const std::string& file, const std::vector<std::string>& overrides) {
  run_config cfg;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) fail("cannot read config file {}", file);
    std::stringstream ss;
    ss << in.rdbuf();
    apply_toml(cfg, ss.str(), file);
  }
  for (auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

}  // namespace zf
