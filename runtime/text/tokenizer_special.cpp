// The special tokens a Hugging Face tokenizer adds around a text: tokenizer.json's post_processor,
// overridden per side by tokenizer_config.json's add_bos_token / add_eos_token. The precedence
// and why it is transformers' are in tokenizer.hpp ("Special tokens").
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "runtime/text/tokenizer_model.hpp"

namespace zf {

namespace {

using json = nlohmann::json;

// Where a special token's id comes from must be a token of this tokenizer.
int checked_id(const json& v, int vocab_size, const std::string& file, std::string_view what) {
  if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() >= vocab_size)
    fail("tokenizer: '{}': post_processor {} has id {}, expected an integer in [0, {})", file, what,
         v.dump(), vocab_size);
  return v.get<int>();
}

// TemplateProcessing: "single" is [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
// ...]; "special_tokens" maps each SpecialToken's name to {"ids": [...]}.
special_rule parse_template(const json& p, int vocab_size, const std::string& file) {
  const json& single = p.value("single", json());
  const json& specials = p.value("special_tokens", json::object());
  if (!single.is_array() || !specials.is_object())
    fail(
        "tokenizer: '{}': TemplateProcessing needs a \"single\" array and a \"special_tokens\" "
        "object, found {}",
        file, p.dump());
  special_rule r;
  bool seen_a = false;
  for (const json& piece : single) {
    if (piece.contains("Sequence") && piece["Sequence"].value("id", "") == "A" && !seen_a) {
      seen_a = true;
      continue;
    }
    if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id"))
      fail(
          "tokenizer: '{}': TemplateProcessing single piece {} is unsupported (one $A and "
          "SpecialTokens)",
          file, piece.dump());
    const json& name = piece["SpecialToken"]["id"];
    if (!name.is_string() || !specials.contains(name.get<std::string>()))
      fail("tokenizer: '{}': TemplateProcessing special token {} is not in its special_tokens",
           file, name.dump());
    const json& ids = specials[name.get<std::string>()].value("ids", json());
    if (!ids.is_array() || ids.empty())
      fail("tokenizer: '{}': TemplateProcessing special token {} has no \"ids\"", file,
           name.dump());
    for (const json& id : ids)
      (seen_a ? r.suffix : r.prefix).push_back(checked_id(id, vocab_size, file, name.dump()));
  }
  if (!seen_a)
    fail("tokenizer: '{}': TemplateProcessing single template {} has no $A", file, single.dump());
  return r;
}

special_rule parse_post_processor(const json& p, int vocab_size, const std::string& file) {
  if (p.is_null()) return {};
  if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
    fail("tokenizer: '{}': post_processor {} has no \"type\"", file, p.dump());
  const std::string type = p["type"];
  if (type == "ByteLevel") return {};  // trims offsets only
  if (type == "TemplateProcessing") return parse_template(p, vocab_size, file);
  if (type == "BertProcessing" || type == "RobertaProcessing") {  // cls $A sep
    auto id_of = [&](const char* key) {
      const json& v = p.value(key, json());
      if (!v.is_array() || v.size() != 2)
        fail("tokenizer: '{}': {} \"{}\" is {}, expected [token, id]", file, type, key, v.dump());
      return checked_id(v[1], vocab_size, file, type + " " + key);
    };
    return {{id_of("cls")}, {id_of("sep")}};
  }
  if (type == "Sequence") {  // each processor wraps what the ones before it produced
    const json& seq = p.value("processors", json());
    if (!seq.is_array())
      fail("tokenizer: '{}': post_processor Sequence has no \"processors\" array", file);
    special_rule r;
    for (const json& q : seq) {
      special_rule inner = parse_post_processor(q, vocab_size, file);
      r.prefix.insert(r.prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      r.suffix.insert(r.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return r;
  }
  fail(
      "tokenizer: '{}': post_processor type '{}' is unsupported (TemplateProcessing, ByteLevel, "
      "Sequence, BertProcessing, RobertaProcessing or null)",
      file, type);
}

// tokenizer_config.json's fields that decide special tokens; absent ones stay nullopt.
struct token_config {
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> bos, eos;  // token text
  std::string chat_template;
};

// "chat_template": a string, or a list of {"name", "template"} (the "default" one, else the
// first); anything else is ignored (the template is only read to detect a format).
std::string chat_template_of(const json& c) {
  if (!c.contains("chat_template")) return {};
  const json& t = c["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (!t.is_array()) return {};
  std::string first;
  for (const json& e : t) {
    if (!e.is_object() || !e.contains("template") || !e["template"].is_string()) continue;
    if (e.value("name", "") == "default") return e["template"].get<std::string>();
    if (first.empty()) first = e["template"].get<std::string>();
  }
  return first;
}

token_config parse_token_config(const json& c, const std::string& file) {
  if (!c.is_object()) fail("tokenizer: '{}' must hold a JSON object", file);
  auto flag = [&](const char* key) -> std::optional<bool> {
    if (!c.contains(key) || c[key].is_null()) return std::nullopt;
    if (!c[key].is_boolean())
      fail("tokenizer: '{}': \"{}\" is {}, expected true or false", file, key, c[key].dump());
    return c[key].get<bool>();
  };
  // A string, or an AddedToken object {"__type": "AddedToken", "content": ...}.
  auto token = [&](const char* key) -> std::optional<std::string> {
    if (!c.contains(key) || c[key].is_null()) return std::nullopt;
    const json& v = c[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
      return v["content"].get<std::string>();
    fail("tokenizer: '{}': \"{}\" is {}, expected a string or {{\"content\": ...}}", file, key,
         v.dump());
  };
  return {flag("add_bos_token"), flag("add_eos_token"), token("bos_token"), token("eos_token"),
          chat_template_of(c)};
}

}  // namespace

hf_specials tokenizer_detail::read_hf_specials(const json& post_processor,
                                               const std::filesystem::path& tokenizer_json,
                                               int vocab_size,
                                               const std::function<int(const std::string&)>& lookup,
                                               bool read_config) {
  hf_specials out;
  out.rule = parse_post_processor(post_processor, vocab_size, tokenizer_json.string());

  const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (!read_config || !std::filesystem::exists(config_path, ec)) return out;
  const std::string file = config_path.string();
  token_config tc;
  try {
    tc = parse_token_config(json::parse(read_file(config_path)), file);
  } catch (const json::exception& e) {
    fail("tokenizer: '{}' is not valid JSON: {}", file, e.what());
  }
  out.chat_template = std::move(tc.chat_template);
  if (tc.bos) out.bos = lookup(*tc.bos);
  if (tc.eos) out.eos = lookup(*tc.eos);
  // An explicit flag rebuilds its side from bos_token / eos_token, as transformers'
  // update_post_processor does; a side without a flag keeps the post_processor's tokens.
  auto apply = [&](const std::optional<bool>& add, const std::optional<std::string>& text, int id,
                   std::vector<int>& side, std::string_view name) {
    if (!add) return;
    side.clear();
    if (!*add) return;
    if (!text)
      fail("tokenizer: '{}': add_{}_token is true but {}_token is absent or null", file, name,
           name);
    if (id < 0)
      fail("tokenizer: '{}': add_{}_token is true but {}_token '{}' is not a token of '{}'", file,
           name, name, *text, tokenizer_json.string());
    side.push_back(id);
  };
  apply(tc.add_bos, tc.bos, out.bos, out.rule.prefix, "bos");
  apply(tc.add_eos, tc.eos, out.eos, out.rule.suffix, "eos");
  return out;
}

}  // namespace zf
