#include "runtime/core/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "runtime/core/config_keys.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_spec.hpp"

namespace zf {
namespace {
using namespace config_detail;

std::vector<key> model_keys() {
  return {
      ZF_ENUM("model.arch", model.arch,
              "architecture: gpt2 (LayerNorm, learned positions, GELU) or llama (RMSNorm, RoPE, "
              "SwiGLU, GQA)",
              "gpt2", "llama"),
      ZF_INT("model.n_layer", model.n_layer, 1, 256, "transformer blocks"),
      ZF_INT("model.n_head", model.n_head, 1, 256, "attention heads (divides n_embd)"),
      ZF_INT("model.n_embd", model.n_embd, 8, 65536, "embedding width"),
      ZF_INT("model.n_positions", model.n_positions, 1, 1 << 20, "max context length"),
      ZF_INT("model.vocab_size", model.vocab_size, 2, 1 << 22,
             "vocabulary size (>= the tokenizer's)"),
      ZF_INT("model.n_kv_head", model.n_kv_head, 0, 256,
             "llama: key/value heads (grouped-query attention); 0 = n_head"),
      ZF_INT("model.head_dim", model.head_dim, 0, 4096, "per-head width; 0 = n_embd / n_head"),
      ZF_INT("model.intermediate", model.intermediate, 0, 1 << 20,
             "MLP width; 0 = 4 n_embd (gpt2), 8/3 n_embd rounded up to 32 (llama)"),
      ZF_NUM("model.norm_eps", model.norm_eps, 1e-12, 1, "LayerNorm / RMSNorm epsilon"),
      ZF_NUM("model.rope_theta", model.rope_theta, 1, 1e12, "llama: RoPE base"),
      ZF_ENUM("model.rope_scaling.type", model.rope_type, "llama: as Hugging Face rope_scaling",
              "none", "linear", "llama3"),
      ZF_NUM("model.rope_scaling.factor", model.rope_factor, 1e-6, 1e6,
             "llama: rope_scaling factor"),
      ZF_NUM("model.rope_scaling.low_freq_factor", model.rope_low_freq_factor, 1e-6, 1e6,
             "llama3 scaling: low_freq_factor"),
      ZF_NUM("model.rope_scaling.high_freq_factor", model.rope_high_freq_factor, 1e-6, 1e6,
             "llama3 scaling: high_freq_factor (> low_freq_factor)"),
      ZF_INT("model.rope_scaling.original_max_positions", model.rope_original_max_positions, 0,
             1 << 24, "llama3 scaling: original_max_position_embeddings"),
      ZF_BOOL("model.tied_head", model.tied_head, "the LM head shares the token embedding"),
      ZF_BOOL("model.attn_bias", model.attn_bias,
              "llama: biases on the q/k/v and output projections"),
      ZF_BOOL("model.value_head", model.value_head,
              "a scalar head on the final norm (reward models and PPO critics)"),
      ZF_STR("model.init_hf", model.init_hf,
             "Hugging Face folder to fine-tune (its config.json sets the model keys); \"\" = "
             "random init"),
  };
}

std::vector<key> train_keys() {
  auto seed = ZF_INT("train.seed", train.seed, 0, 9.2e18, "seed for weights and data order");
  seed.wide = true;
  auto data_seed = ZF_INT("train.data_seed", train.data_seed, -1, 9.2e18,
                          "seed of the batches' order alone; -1 = train.seed (set it to vary "
                          "train.seed over the initial weights only)");
  data_seed.wide = true;
  std::vector<key> train = {
      ZF_INT("train.steps", train.steps, 1, 1e9, "optimizer steps"),
      ZF_INT("train.batch_size", train.batch_size, 1, 1 << 16, "sequences per micro-batch"),
      ZF_INT("train.seq_len", train.seq_len, 2, 1 << 20, "tokens per sequence"),
      ZF_INT("train.grad_accum", train.grad_accum, 1, 1 << 16, "micro-batches per optimizer step"),
      seed,
      data_seed,
      ZF_INT("train.prefetch", train.prefetch, 1, 64, "batches the sampler runs ahead"),
      ZF_INT("train.threads", train.threads, 0, 1024, "compute threads; 0 = all cores"),
      ZF_INT("train.ranks", train.ranks, 1, 64,
             "data-parallel ranks (threads of one process); batch_size is per rank"),
      ZF_INT("train.sample_tokens", train.sample_tokens, 0, 1 << 20,
             "tokens sampled at the end of a run"),
      ZF_INT("train.comm_timeout_s", train.comm_timeout_s, 1, 7 * 86400,
             "seconds a collective between processes may wait for a peer before a dead or "
             "frozen rank fails the run"),
  };
  for (auto& k : train_efficiency_keys()) train.push_back(std::move(k));
  for (auto& k : precision_keys()) train.push_back(std::move(k));
  std::vector<key> rest = {
      ZF_NUM("optimizer.lr", optimizer.lr, 1e-12, 10, "peak learning rate"),
      ZF_NUM("optimizer.weight_decay", optimizer.weight_decay, 0, 10,
             "AdamW decay on matrices and embeddings"),
      ZF_NUM("optimizer.beta1", optimizer.beta1, 0, 0.999999, "AdamW beta1"),
      ZF_NUM("optimizer.beta2", optimizer.beta2, 0, 0.999999, "AdamW beta2"),
      ZF_NUM("optimizer.eps", optimizer.eps, 1e-30, 1, "AdamW epsilon"),
      ZF_NUM("optimizer.grad_clip", optimizer.grad_clip, 0, 1e9, "max global grad norm; 0 = off"),
      ZF_INT("schedule.warmup", schedule.warmup, 0, 1e9, "linear warm-up steps"),
      ZF_NUM("schedule.min_lr_ratio", schedule.min_lr_ratio, 0, 1,
             "final lr / peak lr (cosine over train.steps)"),
      ZF_ENUM("schedule.decay_by", schedule.decay_by,
              "what the cosine decay counts: optimizer steps, tokens (of train.tokens, else "
              "train.steps full steps) or layer_tokens (tokens times the layers that saw them, "
              "which random-LTD lowers); warm-up is in steps",
              "steps", "tokens", "layer_tokens"),
      ZF_INT("zero.stage", zero.stage, 0, 3,
             "ZeRO stage: 0 DP, 1 +optimizer state, 2 +gradients, 3 +parameters sharded"),
      ZF_INT("checkpoint.every", checkpoint.every, 0, 1e9,
             "steps between checkpoints; 0 = at the end only"),
      ZF_INT("checkpoint.keep", checkpoint.keep, 1, 1e6, "checkpoints kept on disk"),
      ZF_INT("eval.every", eval.every, 0, 1e9, "steps between validation passes; 0 = never"),
      ZF_INT("eval.batches", eval.batches, 1, 1e6, "batches per validation"),
      ZF_BOOL("monitor.tensorboard", monitor.tensorboard,
              "also write the metrics as a TensorBoard event file (events.out.tfevents.*) in the "
              "run folder"),
  };
  train.insert(train.end(), rest.begin(), rest.end());
  return train;
}

std::vector<key> serve_keys() {
  return {
      ZF_ENUM("engine.policy", engine.policy,
              "scheduling: split_fuse (Dynamic SplitFuse) or static_batch (the baseline)",
              "split_fuse", "static_batch"),
      ZF_INT("engine.token_budget", engine.token_budget, 1, 1 << 16, "tokens per forward pass"),
      ZF_INT("engine.max_seqs", engine.max_seqs, 1, 4096, "running sequences at most"),
      ZF_INT("engine.block_size", engine.block_size, 1, 1024, "tokens per KV block"),
      ZF_INT("engine.kv_blocks", engine.kv_blocks, 0, 1 << 24,
             "KV blocks in the pool; 0 = automatic"),
      ZF_INT("engine.max_queue", engine.max_queue, 0, 1 << 20, "waiting requests before 429"),
      ZF_INT("engine.threads", engine.threads, 0, 1024, "compute threads; 0 = all cores"),
      ZF_BOOL("engine.prefix_caching", engine.prefix_caching,
              "share the KV blocks of common prompt prefixes across requests"),
      ZF_BOOL("engine.batch_invariant", engine.batch_invariant,
              "logits independent of batching and chunking (equal to `zeroflow score` bits)"),
      ZF_ENUM("engine.dtype", engine.dtype,
              "weights: fp32, bf16 (every projection and the LM head as bf16, fp32 math), or "
              "llama.cpp's f16, q8_0, q4_0 formats (quantized at load); embeddings and norms "
              "stay fp32; not for an already quantized model",
              "fp32", "bf16", "f16", "q8_0", "q4_0"),
      ZF_ENUM("engine.device", engine.device,
              "where the engine serves: cpu, or cuda (fp32 weights, the KV pool and every "
              "forward in GPU memory; not with batch_invariant or another dtype yet)",
              "cpu", "cuda"),
      ZF_ENUM("engine.kv_dtype", engine.kv_dtype,
              "KV cache rows: auto (bf16 unless engine.dtype is fp32), fp32 or bf16", "auto",
              "fp32", "bf16"),
      ZF_STR("server.host", server.host, "address to listen on (loopback unless told otherwise)"),
      ZF_INT("server.port", server.port, 0, 65535, "port; 0 = any free one"),
      ZF_INT("server.io_threads", server.io_threads, 1, 64, "HTTP threads"),
      ZF_BOOL("server.enable_weight_updates", server.enable_weight_updates,
              "allow POST /v1/update_weights_from_disk when not on loopback"),
      ZF_LIST("server.api_keys", server.api_keys,
              "if not empty, /v1/ requests need `Authorization: Bearer <one of these>` (also "
              "$ZEROFLOW_API_KEY)"),
      ZF_STR("server.api_key_file", server.api_key_file,
             "a file of API keys, one per line, added to api_keys"),
      ZF_BOOL("server.protect_metrics", server.protect_metrics,
              "/metrics needs an API key too (/health never does)"),
      ZF_INT("server.prepare_threads", server.prepare_threads, 1, 64,
             "threads that parse and tokenize requests (off the HTTP threads)"),
      ZF_INT("server.max_connections", server.max_connections, 1, 1 << 20,
             "connections served at once"),
      ZF_INT("server.overflow_connections", server.overflow_connections, 0, 1 << 16,
             "connections over max_connections still answered on /health and /metrics"),
      ZF_INT("server.max_body_bytes", server.max_body_bytes, 1024, 1 << 30,
             "largest request body (else 413)"),
      ZF_INT("server.max_prompt_bytes", server.max_prompt_bytes, 1, 1 << 30,
             "longest prompt text, checked before tokenizing (else 400)"),
      ZF_INT("server.header_timeout_s", server.header_timeout_s, 1, 3600,
             "seconds for a request's headers, and for an idle keep-alive connection"),
      ZF_INT("server.read_timeout_s", server.read_timeout_s, 1, 3600,
             "seconds for a request's body"),
      ZF_INT("server.write_timeout_s", server.write_timeout_s, 1, 3600,
             "seconds a write may make no progress before the client is dropped"),
      ZF_INT("server.max_output_bytes", server.max_output_bytes, 4096, 1 << 30,
             "response bytes queued for one streaming client before it is dropped"),
      ZF_NUM("server.record_every_s", server.record_every_s, 0, 86400,
             "seconds between the lines of figures `serve` appends to its run folder's "
             "metrics.jsonl; 0 = no recording"),
  };
}

const std::vector<key>& keys() {
  static const std::vector<key> k = [] {
    std::vector<key> all;
    for (auto part :
         {model_keys(), moe_keys(), train_keys(), data_keys(), serve_keys(), rlhf_keys()})
      all.insert(all.end(), part.begin(), part.end());
    return all;
  }();
  return k;
}

const key* find_key(const std::string& name) {
  for (auto& k : keys())
    if (k.info.path == name) return &k;
  for (auto& [old_path, now] : renamed_keys())
    if (old_path == name) return find_key(now);
  return nullptr;
}

std::string fmt_num(double v) {
  if (v == static_cast<int64_t>(v) && std::abs(v) < 1e15) return fmt::format("{}", (int64_t)v);
  return fmt::format("{}", v);
}

std::string choices_text(const key& k) {
  std::string s;
  for (auto& c : k.info.choices) s += (s.empty() ? "\"" : ", \"") + c + "\"";
  return s;
}

void check_range(const key& k, double v, const std::string& given) {
  if (!(v >= k.info.lo && v <= k.info.hi))  // also refuses NaN
    fail("{}: expected {}..{}, got {}", k.info.path, fmt_num(k.info.lo), fmt_num(k.info.hi), given);
}

void set_integer(run_config& c, const key& k, int64_t v, const std::string& given) {
  if (!(double(v) >= k.info.lo && double(v) <= k.info.hi)) check_range(k, double(v), given);
  if (k.wide)
    as<int64_t>(c, k) = v;
  else
    as<int>(c, k) = static_cast<int>(v);
}

void set_number(run_config& c, const key& k, double v, const std::string& given) {
  check_range(k, v, given);
  if (k.info.kind == key_kind::integer) {
    if (v != static_cast<double>(static_cast<int64_t>(v)))
      fail("{}: expected an integer, got {}", k.info.path, given);
    set_integer(c, k, static_cast<int64_t>(v), given);
  } else {
    as<double>(c, k) = v;
  }
}

// Strings, enums and list items: enums must be one of the choices.
void set_string(run_config& c, const key& k, const std::string& v) {
  if (k.info.kind == key_kind::choice &&
      std::find(k.info.choices.begin(), k.info.choices.end(), v) == k.info.choices.end())
    fail("{}: expected one of {}, got \"{}\"", k.info.path, choices_text(k), v);
  as<std::string>(c, k) = v;
}

void set_from_toml(run_config& c, const key& k, const toml::node& n, const std::string& where) {
  const std::string& path = k.info.path;
  switch (k.info.kind) {
    case key_kind::boolean:
      if (!n.is_boolean())
        fail("{}: expected true or false, got {} ({})", path, node_text(n), where);
      as<bool>(c, k) = *n.value<bool>();
      return;
    case key_kind::string:
    case key_kind::choice:
      if (!n.is_string()) fail("{}: expected a string, got {} ({})", path, node_text(n), where);
      set_string(c, k, *n.value<std::string>());
      return;
    case key_kind::list: {
      const toml::array* a = n.as_array();
      if (!a) fail("{}: expected a list of strings, got {} ({})", path, node_text(n), where);
      std::vector<std::string> v;
      for (auto& e : *a) {
        if (!e.is_string())
          fail("{}: expected a list of strings, got an item {} ({})", path, node_text(e), where);
        v.push_back(*e.value<std::string>());
      }
      as<std::vector<std::string>>(c, k) = std::move(v);
      return;
    }
    case key_kind::integer_list:
    case key_kind::source_list:
      set_items_from_toml(c, k, n, where);
      return;
    case key_kind::integer:
    case key_kind::number:
      break;
  }
  if (n.is_integer() && k.info.kind == key_kind::integer) {
    set_integer(c, k, *n.value<int64_t>(), node_text(n));
    return;
  }
  std::optional<double> v;
  if (n.is_integer())
    v = static_cast<double>(*n.value<int64_t>());
  else if (n.is_floating_point() && k.info.kind == key_kind::number)
    v = *n.value<double>();
  if (!v)
    fail("{}: expected {}, got {} ({})", path,
         k.info.kind == key_kind::integer ? "an integer" : "a number", node_text(n), where);
  set_number(c, k, *v, node_text(n));
}

void walk(run_config& c, const toml::table& t, const std::string& prefix,
          const std::string& source) {
  for (auto&& [name, node] : t) {
    std::string path =
        prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
    const key* k = find_key(path);
    if (auto* sub = node.as_table(); sub && !k) {  // a table of keys (a key's table: refused)
      walk(c, *sub, path, source);
      continue;
    }
    if (!k) fail("unknown config key '{}' in {}", path, source);
    set_from_toml(c, *k, node, source);
  }
}

}  // namespace

namespace config_detail {

std::string node_text(const toml::node& n) {
  std::ostringstream os;
  n.visit([&](auto&& v) { os << v; });
  return os.str();
}

std::string toml_quoted(const std::string& s) {
  std::ostringstream os;
  if (s.find('\n') == std::string::npos) {
    os << toml::value<std::string>(s);  // 'text' where it can, else "escaped"
  } else {
    // toml++ writes a string with a line break as a multi-line literal ('''...'''), which does
    // not read back when the text holds ''' (found by fuzz/fuzz_config) or starts with a line
    // break (TOML drops it): a one-line basic string with escapes ("a\nb") instead.
    constexpr auto flags =
        toml::toml_formatter::default_flags &
        ~(toml::format_flags::allow_literal_strings | toml::format_flags::allow_multi_line_strings);
    os << toml::toml_formatter(toml::value<std::string>(s), flags);
  }
  return os.str();
}

std::string toml_number(double v) {
  std::string t = fmt::format("{}", v);
  if (t.find_first_of(".en") == std::string::npos) t += ".0";  // 10.0 stays a float
  return t;
}

}  // namespace config_detail

namespace {

std::string text_of(run_config& c, const key& k) {
  switch (k.info.kind) {
    case key_kind::boolean:
      return as<bool>(c, k) ? "true" : "false";
    case key_kind::string:
    case key_kind::choice:
      return toml_quoted(as<std::string>(c, k));
    case key_kind::list: {
      std::string s;
      for (auto& e : as<std::vector<std::string>>(c, k))
        s += (s.empty() ? "" : ", ") + toml_quoted(e);
      return "[" + s + "]";
    }
    case key_kind::integer:
      return k.wide ? fmt::format("{}", as<int64_t>(c, k)) : fmt::format("{}", as<int>(c, k));
    case key_kind::number:
      return toml_number(as<double>(c, k));
    case key_kind::integer_list:
    case key_kind::source_list:
      return items_text(c, k);
  }
  return {};
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
    fail("--set {}: expected key=value (for example optimizer.lr=1e-3)", assignment);
  std::string name = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  const key* k = find_key(name);
  if (!k) fail("unknown config key '{}' in --set", name);
  const auto unquote = [](std::string v) {
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
  };
  switch (k->info.kind) {
    case key_kind::boolean:
      if (value != "true" && value != "false")
        fail("{}: expected true or false, got '{}'", name, value);
      as<bool>(cfg, *k) = value == "true";
      return;
    case key_kind::string:
    case key_kind::choice:
      set_string(cfg, *k, unquote(value));
      return;
    case key_kind::list: {  // a,b,c or a TOML array ["a", "b"]
      if (!value.empty() && value.front() == '[') {
        toml::table t;
        try {
          t = toml::parse(std::string_view("v = " + value), std::string_view("--set"));
        } catch (const toml::parse_error& e) {
          fail("{}: expected a list of strings, got '{}' ({})", name, value, e.description());
        }
        set_from_toml(cfg, *k, *t["v"].node(), "--set");
        return;
      }
      std::vector<std::string> v;
      std::size_t p = 0;
      while (!value.empty() && p <= value.size()) {
        const std::size_t q = std::min(value.find(',', p), value.size());
        v.push_back(unquote(value.substr(p, q - p)));
        p = q + 1;
      }
      as<std::vector<std::string>>(cfg, *k) = std::move(v);
      return;
    }
    case key_kind::integer_list:
    case key_kind::source_list:
      set_items_from_text(cfg, *k, value);
      return;
    case key_kind::integer: {
      int64_t iv = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), iv);
      if (ec == std::errc() && p == value.data() + value.size()) {
        set_integer(cfg, *k, iv, value);
        return;
      }
      break;
    }
    case key_kind::number:
      break;
  }
  double v = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || p != value.data() + value.size())
    fail("{}: expected {}, got '{}'", name,
         k->info.kind == key_kind::integer ? "an integer" : "a number", value);
  set_number(cfg, *k, v, value);
}

void validate(const run_config& c) {
  run_config tmp = c;
  for (auto& k : keys()) {
    if (k.info.kind == key_kind::integer) {
      double v = k.wide ? double(as<int64_t>(tmp, k)) : as<int>(tmp, k);
      check_range(k, v, fmt_num(v));
    } else if (k.info.kind == key_kind::number) {
      check_range(k, as<double>(tmp, k), fmt_num(as<double>(tmp, k)));
    } else if (k.info.kind == key_kind::choice) {
      set_string(tmp, k, as<std::string>(tmp, k));
    } else if (k.info.kind == key_kind::integer_list || k.info.kind == key_kind::source_list) {
      check_items(tmp, k);
    }
  }
  const model_config& m = c.model;
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
  validate_moe(c);
  try {
    check_spec(spec_of(m));
  } catch (const error& e) {
    fail("model: {}", e.what());
  }
  if (c.train.seq_len > c.model.n_positions)
    fail("train.seq_len: expected at most model.n_positions ({}), got {}", c.model.n_positions,
         c.train.seq_len);
  if (c.data.tokenizer != "gpt2") {  // else a tokenizer.json, or a folder holding one
    const std::filesystem::path t = c.data.tokenizer;
    std::error_code ec;  // a name the OS refuses (too long, ...) is no tokenizer, not a throw
    const bool ok = std::filesystem::is_regular_file(t, ec) ||
                    std::filesystem::is_regular_file(t / "tokenizer.json", ec);
    if (!ok)
      fail("data.tokenizer: expected \"gpt2\" or a folder with a tokenizer.json, got \"{}\"",
           c.data.tokenizer);
  }
  if (c.data.corpus.empty()) fail("data.corpus: expected a corpus name or path, got \"\"");
  validate_data(c);
  validate_device(c);
}

std::string to_toml(const run_config& c) {
  run_config tmp = c;
  std::string out, section;
  for (auto& k : keys()) {
    auto dot = k.info.path.find('.');
    std::string sec = k.info.path.substr(0, dot), leaf = k.info.path.substr(dot + 1);
    if (sec != section) {
      out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", sec);
      section = sec;
    }
    out += fmt::format("{} = {}  # {}\n", leaf, text_of(tmp, k), k.info.help);
  }
  return out;
}

const std::vector<std::pair<std::string, std::string>>& renamed_keys() {
  static const std::vector<std::pair<std::string, std::string>> r = {
      {"train.lr", "optimizer.lr"},
      {"train.weight_decay", "optimizer.weight_decay"},
      {"train.beta1", "optimizer.beta1"},
      {"train.beta2", "optimizer.beta2"},
      {"train.eps", "optimizer.eps"},
      {"train.grad_clip", "optimizer.grad_clip"},
      {"train.warmup", "schedule.warmup"},
      {"train.min_lr_ratio", "schedule.min_lr_ratio"},
      {"train.zero.stage", "zero.stage"},
      {"train.checkpoint_every", "checkpoint.every"},
      {"train.keep_checkpoints", "checkpoint.keep"},
      {"train.eval_every", "eval.every"},
      {"train.eval_batches", "eval.batches"},
  };
  return r;
}

const std::vector<key_info>& config_schema() {
  static const std::vector<key_info> s = [] {
    std::vector<key_info> v;
    for (auto& k : keys()) v.push_back(k.info);
    return v;
  }();
  return s;
}

std::string value_text(const run_config& cfg, const std::string& path) {
  const key* k = find_key(path);
  if (!k) fail("unknown config key '{}'", path);
  run_config tmp = cfg;
  return text_of(tmp, *k);
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
