// A GGUF file's tokenizer (tokenizer.ggml.*) written from and read into our tokenizer: byte-level
// BPE (model "gpt2") or SentencePiece (model "llama"); gguf_model_detail.hpp.
#include <fmt/format.h>

#include <array>
#include <nlohmann/json.hpp>
#include <string_view>

#include "runtime/core/error.hpp"
#include "storage/gguf_model.hpp"
#include "storage/gguf_model_detail.hpp"

namespace zf::storage::gguf_detail {
namespace {
using sz = std::size_t;
using json = nlohmann::json;

// llama.cpp's tokenizer.ggml.pre names and the pre-tokenizer regex each stands for, as the
// Hugging Face tokenizer.json of that family spells it (llama-vocab.cpp has the same splits).
struct pre_regex {
  std::string_view pre, regex;
};
// GPT-2's regex is also runtime/text's default (load_gpt2, ByteLevel use_regex).
constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::array<pre_regex, 5> kPres = {{{"gpt-2", kGpt2},
                                             {"llama-bpe", kLlama3},
                                             {"llama3", kLlama3},
                                             {"llama-v3", kLlama3},
                                             {"qwen2", kQwen2}}};

// A TemplateProcessing post_processor adding bos before and / or eos after the text.
json template_processing(const std::vector<std::string>& tokens, const token_ids& ids) {
  json single = json::array(), specials = json::object();
  auto special = [&](int id) {
    const std::string& name = tokens[sz(id)];
    single.push_back({{"SpecialToken", {{"id", name}, {"type_id", 0}}}});
    specials[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
  };
  if (ids.add_bos) special(ids.bos);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (ids.add_eos) special(ids.eos);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}};
}

// tokenizer.ggml.* of a SentencePiece tokenizer, padded to `vocab` rows as llama.cpp's
// converter pads ("[PAD<id>]", score -1000, unused).
void write_spm(const spm_vocab& v, int vocab, const token_ids& ids, std::vector<gguf_kv>& md) {
  std::vector<std::string> tokens = v.pieces;
  std::vector<float> scores = v.scores;
  std::vector<int32_t> types(v.types.begin(), v.types.end());
  for (int id = int(tokens.size()); id < vocab; ++id) {
    tokens.push_back(fmt::format("[PAD{}]", id));
    scores.push_back(-1000.0f);
    types.push_back(spm_vocab::unused);
  }
  md.push_back({"tokenizer.ggml.model", gguf_value::string("llama")});
  md.push_back({"tokenizer.ggml.tokens", gguf_value::string_array(std::move(tokens))});
  md.push_back({"tokenizer.ggml.scores", gguf_value::array(scores)});
  md.push_back({"tokenizer.ggml.token_type", gguf_value::array(types)});
  auto id_key = [&](const char* key, int id) {
    if (id >= 0) md.push_back({key, gguf_value::u32(uint32_t(id))});
  };
  id_key("tokenizer.ggml.bos_token_id", ids.bos);
  id_key("tokenizer.ggml.eos_token_id", ids.eos);
  id_key("tokenizer.ggml.unknown_token_id", v.unk);
  md.push_back({"tokenizer.ggml.add_bos_token", gguf_value::boolean(ids.add_bos)});
  md.push_back({"tokenizer.ggml.add_eos_token", gguf_value::boolean(ids.add_eos)});
  md.push_back({"tokenizer.ggml.add_space_prefix", gguf_value::boolean(v.add_space_prefix)});
}

// A token id key of a SentencePiece vocabulary of n tokens: absent -> fallback (llama.cpp's
// default for model "llama": bos 1, eos 2, unknown 0) where it names a token, else -1.
int spm_id(const gguf_file& g, const char* key, std::size_t n, int fallback) {
  if (!g.has(key)) return fallback < int64_t(n) ? fallback : -1;
  const int64_t id = g.get_int(key);
  if (id < 0 || id >= int64_t(n))
    fail("{}: {} is {}, outside the {} tokens", g.path().string(), key, id, n);
  return int(id);
}

tokenizer read_spm(const gguf_file& g, token_ids& ids) {
  const std::string where = g.path().string();
  spm_vocab v;
  v.pieces = g.get_strings("tokenizer.ggml.tokens");
  const sz n = v.pieces.size();
  v.scores.assign(n, 0.0f);  // llama.cpp: scores and types are optional
  if (g.has("tokenizer.ggml.scores")) {
    const std::vector<double> scores = g.get_floats("tokenizer.ggml.scores");
    if (scores.size() != n)
      fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", where, scores.size(), n);
    for (sz i = 0; i < n; ++i) v.scores[i] = float(scores[i]);
  }
  v.types.assign(n, spm_vocab::normal);
  if (g.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = g.get_ints("tokenizer.ggml.token_type");
    if (types.size() != n)
      fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", where, types.size(), n);
    for (sz i = 0; i < n; ++i) {
      if (types[i] < 1 || types[i] > 6)
        fail("{}: tokenizer.ggml.token_type of token {} is {}, expected 1 to 6", where, i,
             types[i]);
      v.types[i] = int(types[i]);
    }
  }
  v.bos = spm_id(g, "tokenizer.ggml.bos_token_id", n, 1);
  v.eos = spm_id(g, "tokenizer.ggml.eos_token_id", n, 2);
  v.unk = spm_id(g, "tokenizer.ggml.unknown_token_id", n, 0);
  auto flag = [&](const char* key, bool fallback, int id) {
    const bool on = g.has(key) ? g.get_bool(key) : fallback;
    if (on && id < 0) fail("{}: {} is true but the file gives no such token id", where, key);
    return on;
  };
  v.add_bos = flag("tokenizer.ggml.add_bos_token", true, v.bos);
  v.add_eos = flag("tokenizer.ggml.add_eos_token", false, v.eos);
  v.add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true, 0);
  ids = {v.bos, v.eos, v.add_bos, v.add_eos};
  if (g.has("tokenizer.chat_template")) v.chat_template = g.get_string("tokenizer.chat_template");
  return tokenizer::from_spm(std::move(v), g.path());
}

}  // namespace

void write_tokenizer(const tokenizer& tok, int vocab, const token_ids& ids,
                     std::vector<gguf_kv>& md, const std::string& what) {
  // the chat template as the files gave it (llama.cpp and we detect the format from it)
  if (!tok.chat_template().empty())
    md.push_back({"tokenizer.chat_template", gguf_value::string(tok.chat_template())});
  if (const spm_vocab* v = tok.spm()) {
    write_spm(*v, vocab, ids, md);
    return;
  }
  std::string_view pre;
  for (const auto& p : kPres)
    if (pre.empty() && tok.pre_tokenizer_pattern() == p.regex) pre = p.pre;
  if (pre.empty())
    fail(
        "{}: tokenizer.ggml.pre: the tokenizer's pre-tokenizer regex '{}' is none that llama.cpp "
        "names (GPT-2's, Llama 3's or Qwen 2's)",
        what, tok.pre_tokenizer_pattern());
  std::vector<std::string> tokens, merges;
  std::vector<int32_t> types;
  for (int id = 0; id < vocab; ++id) {
    if (id < tok.vocab_size()) {
      tokens.push_back(tok.token_spelling(id));
      types.push_back(tok.is_special(id) ? 3 : 1);
    } else {
      tokens.push_back(fmt::format("[PAD{}]", id));
      types.push_back(5);
    }
  }
  for (const auto& [a, b] : tok.merge_pairs())
    merges.push_back(tok.token_spelling(a) + " " + tok.token_spelling(b));
  md.push_back({"tokenizer.ggml.model", gguf_value::string("gpt2")});
  md.push_back({"tokenizer.ggml.pre", gguf_value::string(std::string(pre))});
  md.push_back({"tokenizer.ggml.tokens", gguf_value::string_array(std::move(tokens))});
  md.push_back({"tokenizer.ggml.token_type", gguf_value::array(types)});
  md.push_back({"tokenizer.ggml.merges", gguf_value::string_array(std::move(merges))});
  if (ids.bos >= 0)
    md.push_back({"tokenizer.ggml.bos_token_id", gguf_value::u32(uint32_t(ids.bos))});
  if (ids.eos >= 0)
    md.push_back({"tokenizer.ggml.eos_token_id", gguf_value::u32(uint32_t(ids.eos))});
  md.push_back({"tokenizer.ggml.add_bos_token", gguf_value::boolean(ids.add_bos)});
  md.push_back({"tokenizer.ggml.add_eos_token", gguf_value::boolean(ids.add_eos)});
}

tokenizer read_tokenizer(const gguf_file& g, token_ids& ids) {
  const std::string where = g.path().string();
  const std::string model = g.get_string("tokenizer.ggml.model");
  if (model == "llama") return read_spm(g, ids);
  if (model != "gpt2")
    fail(
        "{}: tokenizer.ggml.model is '{}'; read are byte-level BPE ('gpt2') and SentencePiece "
        "('llama')",
        where, model);
  const std::string pre =
      g.has("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "gpt-2";
  const pre_regex* found = nullptr;
  for (const auto& p : kPres)
    if (p.pre == pre) found = &p;
  if (!found)
    fail("{}: tokenizer.ggml.pre is '{}'; read are 'gpt-2', 'llama-bpe' (Llama 3) and 'qwen2'",
         where, pre);
  const auto tokens = g.get_strings("tokenizer.ggml.tokens");
  const auto merges = g.get_strings("tokenizer.ggml.merges");
  std::vector<int64_t> types(tokens.size(), 1);
  if (g.has("tokenizer.ggml.token_type")) types = g.get_ints("tokenizer.ggml.token_type");
  if (types.size() != tokens.size())
    fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", where, types.size(),
         tokens.size());
  auto id_of = [&](const char* key) {
    if (!g.has(key)) return -1;
    const int64_t id = g.get_int(key);
    if (id < 0 || id >= int64_t(tokens.size()))
      fail("{}: {} is {}, outside the {} tokens", where, key, id, tokens.size());
    return int(id);
  };
  ids.bos = id_of("tokenizer.ggml.bos_token_id");
  ids.eos = id_of("tokenizer.ggml.eos_token_id");
  auto flag = [&](const char* key, int id) {
    const bool on = g.has(key) && g.get_bool(key);
    if (on && id < 0) fail("{}: {} is true but the file gives no such token id", where, key);
    return on;
  };
  ids.add_bos = flag("tokenizer.ggml.add_bos_token", ids.bos);
  ids.add_eos = flag("tokenizer.ggml.add_eos_token", ids.eos);

  sz n = tokens.size();  // unused (padding) rows at the end are not tokens
  while (n > 0 && types[n - 1] == 5) --n;
  json vocab = json::object(), added = json::array();
  for (sz id = 0; id < n; ++id) {
    vocab[tokens[id]] = id;
    if (types[id] == 3 || types[id] == 4)
      added.push_back({{"id", id}, {"content", tokens[id]}, {"special", types[id] == 3}});
  }
  const bool llama3 = found->regex == kLlama3;
  json pre_tok = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  if (found->regex != kGpt2)
    pre_tok = {{"type", "Sequence"},
               {"pretokenizers",
                {{{"type", "Split"},
                  {"pattern", {{"Regex", std::string(found->regex)}}},
                  {"behavior", "Isolated"},
                  {"invert", false}},
                 {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", llama3}}},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tok},
      {"post_processor",
       ids.add_bos || ids.add_eos ? template_processing(tokens, ids) : json(nullptr)}};
  if (g.has("tokenizer.chat_template"))
    j["chat_template"] = g.get_string("tokenizer.chat_template");  // from_hf_json keeps it
  return tokenizer::from_hf_json(j, g.path());
}

}  // namespace zf::storage::gguf_detail

namespace zf::storage {

tokenizer read_gguf_tokenizer(const std::filesystem::path& file) {
  const gguf_file g = gguf_file::open(file);
  gguf_detail::token_ids ids;
  return gguf_detail::read_tokenizer(g, ids);
}

}  // namespace zf::storage
