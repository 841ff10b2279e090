// Hugging Face tokenizer.json loading (byte-level BPE): vocabulary, merges, added tokens, the
// pre-tokenizer pattern and the special tokens (tokenizer_special.cpp). The tables it fills are
// the ones load_gpt2 fills.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/text/tokenizer_model.hpp"

namespace zf {

namespace {

// The pre-tokenizer regex of a tokenizer.json (`literal`: a Split String pattern).
struct hf_pattern {
  std::string text;
  bool literal = false;
};

hf_pattern parse_pre_tokenizer(const nlohmann::json& pre, const std::string& file) {
  auto type_of = [&](const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
      fail("tokenizer: '{}': pre_tokenizer entry {} has no \"type\"", file, j.dump());
    return j["type"].get<std::string>();
  };
  auto check_byte_level = [&](const nlohmann::json& j, bool want_regex) {
    if (j.value("add_prefix_space", false))
      fail("tokenizer: '{}': ByteLevel pre_tokenizer with add_prefix_space true is unsupported",
           file);
    if (j.value("use_regex", true) != want_regex)
      fail("tokenizer: '{}': ByteLevel pre_tokenizer has use_regex {}, expected {} here", file,
           !want_regex, want_regex);
  };
  if (pre.is_null()) fail("tokenizer: '{}': pre_tokenizer is null, expected ByteLevel", file);
  const std::string type = type_of(pre);
  if (type == "ByteLevel") {
    check_byte_level(pre, true);
    return {std::string(kPattern), false};
  }
  if (type != "Sequence")
    fail("tokenizer: '{}': pre_tokenizer type '{}' is unsupported (ByteLevel or Sequence)", file,
         type);
  const auto& seq = pre.value("pretokenizers", nlohmann::json::array());
  if (seq.size() == 1 && type_of(seq[0]) == "ByteLevel") {
    check_byte_level(seq[0], true);
    return {std::string(kPattern), false};
  }
  if (seq.size() != 2 || type_of(seq[0]) != "Split" || type_of(seq[1]) != "ByteLevel")
    fail("tokenizer: '{}': pre_tokenizer Sequence must be [Split, ByteLevel], found {}", file,
         seq.dump());
  const auto& split = seq[0];
  check_byte_level(seq[1], false);
  if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
    fail("tokenizer: '{}': Split pre_tokenizer must have behavior Isolated and invert false", file);
  const auto& pat = split.value("pattern", nlohmann::json::object());
  if (pat.contains("Regex") && pat["Regex"].is_string()) return {pat["Regex"], false};
  if (pat.contains("String") && pat["String"].is_string()) return {pat["String"], true};
  fail("tokenizer: '{}': Split pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}, found {}",
       file, pat.dump());
}

using id_map = std::unordered_map<std::string, int, string_hash, std::equal_to<>>;

// A special token named by text (tokenizer_config.json's bos_token): an added token's content
// (ids holds it, special[id] set), else its model.vocab spelling (key_id); -1 if neither.
int special_id(const id_map& ids, const std::vector<bool>& special, const id_map& key_id,
               const std::string& text) {
  if (auto it = ids.find(text); it != ids.end() && special[it->second]) return it->second;
  auto it = key_id.find(text);
  return it == key_id.end() ? -1 : it->second;
}

}  // namespace

tokenizer tokenizer::load_hf(const std::filesystem::path& tokenizer_json) {
  std::error_code ec;  // a folder names its tokenizer.json
  const auto file = std::filesystem::is_directory(tokenizer_json, ec)
                        ? tokenizer_json / "tokenizer.json"
                        : tokenizer_json;
  try {
    return load_hf_json(file);
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
    fail("tokenizer: '{}': unexpected structure: {}", file.string(), e.what());
  }
}

tokenizer tokenizer::load_hf_json(const std::filesystem::path& tokenizer_json) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(tokenizer_json));
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer: '{}' is not valid JSON: {}", tokenizer_json.string(), e.what());
  }
  return from_hf_json(j, tokenizer_json, true);
}

tokenizer tokenizer::from_hf_json(const nlohmann::json& j,
                                  const std::filesystem::path& tokenizer_json, bool read_config) {
  const std::string file = tokenizer_json.string();
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    fail("tokenizer: '{}' has no \"model\" object", file);
  const auto& jm = j["model"];
  if (jm.value("type", "BPE") != "BPE")
    fail("tokenizer: '{}': model.type '{}' is unsupported, expected BPE", file, jm["type"].dump());
  if (!jm.value("dropout", nlohmann::json()).is_null() || jm.value("byte_fallback", false))
    fail("tokenizer: '{}': BPE dropout / byte_fallback are unsupported", file);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (jm.contains(key) && !jm[key].is_null() && jm[key] != "")
      fail("tokenizer: '{}': model.{} {} is unsupported", file, key, jm[key].dump());
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    fail("tokenizer: '{}': normalizer {} is unsupported, expected null", file,
         j["normalizer"].dump());
  const hf_pattern pattern = parse_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()), file);

  const auto& vocab = jm.value("vocab", nlohmann::json());
  const auto& added = j.value("added_tokens", nlohmann::json::array());
  if (!vocab.is_object() || vocab.empty())
    fail("tokenizer: '{}': model.vocab must be a non-empty object of token -> id", file);
  if (!added.is_array()) fail("tokenizer: '{}': added_tokens must be an array", file);
  // The token tables are sized by the largest id, and every id below it must name a token, so
  // no valid file has an id at or past its number of entries (vocab and added tokens together,
  // an added token may repeat a vocab entry). Refusing those first bounds what a file can make
  // us allocate by its own size: an id of 10^9 would otherwise ask for 32 GB.
  const std::size_t entries = vocab.size() + added.size();
  auto id_of = [&](const nlohmann::json& v, const std::string& what) {
    if (!v.is_number_integer())
      fail("tokenizer: '{}': id of {} is {}, expected an integer", file, what, v.dump());
    if (!v.is_number_unsigned() && v.get<std::int64_t>() < 0)
      fail("tokenizer: '{}': {} has id {}, expected a non-negative integer", file, what, v.dump());
    if (v.get<std::uint64_t>() >= entries)
      fail(
          "tokenizer: '{}': {} has id {}, beyond the {} tokens of model.vocab and added_tokens "
          "(ids must be 0..{}, each naming a token)",
          file, what, v.dump(), entries, entries - 1);
    return v.get<int>();
  };
  int n = 0;
  for (const auto& [key, v] : vocab.items())
    n = std::max(n, id_of(v, "token " + nlohmann::json(key).dump()) + 1);
  for (const auto& a : added) {
    if (!a.is_object()) fail("tokenizer: '{}': added token {} is not an object", file, a.dump());
    const auto& c = a.value("content", nlohmann::json());
    const std::string what = "added token " + (c.is_string() ? c.dump() : a.dump());
    n = std::max(n, id_of(a.value("id", nlohmann::json()), what) + 1);
  }
  auto m = std::make_shared<model>();
  m->bytes.resize(n);
  m->special.assign(n, false);
  m->ignore_merges = jm.value("ignore_merges", false);
  const auto u2b = unicode_to_bytes();
  id_map key_id;                                 // vocab spelling -> id
  std::unordered_map<int, std::string> odd_key;  // id -> a vocab key that is not byte-level
  for (const auto& [key, v] : vocab.items()) {
    const int id = v.get<int>();
    std::string raw;
    for (std::size_t i = 0; i < key.size();) {
      const long cp = next_code_point(key, i);
      if (cp < 0 || cp >= long(u2b.size()) || u2b[cp] < 0) {
        raw.clear();
        break;
      }
      raw.push_back(char(u2b[cp]));
    }
    // Not bytes_to_unicode text: only an added token (listed below) may be spelled like that.
    if (raw.empty()) {
      odd_key.emplace(id, key);
      continue;
    }
    if (!m->bytes[id].empty() || !key_id.emplace(key, id).second)
      fail("tokenizer: '{}': model.vocab token '{}' or its id {} appears twice", file, key, id);
    m->ids.emplace(raw, id);
    m->bytes[id] = std::move(raw);
  }
  for (const auto& a : added) {
    const int id = a["id"].get<int>();
    const auto& c = a.value("content", nlohmann::json());
    if (!c.is_string() || c.get<std::string>().empty())
      fail("tokenizer: '{}': added token {} has no content", file, a.dump());
    m->bytes[id] = c.get<std::string>();
    m->add_token(c.get<std::string>(), id);
  }
  for (int id = 0; id < n; ++id)
    if (m->bytes[id].empty() && odd_key.contains(id))
      fail("tokenizer: '{}': model.vocab token '{}' is not byte-level (bytes_to_unicode) text",
           file, odd_key[id]);
    else if (m->bytes[id].empty())
      fail("tokenizer: '{}': no token has id {} (ids must cover [0, {}))", file, id, n);
  for (int b = 0; b < 256; ++b) {
    auto it = m->ids.find(std::string(1, char(b)));
    if (it == m->ids.end() || m->special[it->second])
      fail("tokenizer: '{}': model.vocab lacks the single-byte token for byte {}", file, b);
    m->byte_id[b] = it->second;
  }

  const auto& merges = jm.value("merges", nlohmann::json());
  if (!merges.is_array()) fail("tokenizer: '{}': model.merges must be an array", file);
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const auto& e = merges[r];
    std::string a, b;
    if (e.is_string()) {  // "a b"
      const auto& str = e.get_ref<const std::string&>();
      const std::size_t sp = str.find(' ');
      if (sp == std::string::npos || str.find(' ', sp + 1) != std::string::npos)
        fail("tokenizer: '{}': merges[{}] is '{}', expected 'left right'", file, r, str);
      a = str.substr(0, sp);
      b = str.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0];
      b = e[1];
    } else {
      fail("tokenizer: '{}': merges[{}] is {}, expected \"a b\" or [a, b]", file, r, e.dump());
    }
    auto ia = key_id.find(a), ib = key_id.find(b), iab = key_id.find(a + b);
    if (ia == key_id.end() || ib == key_id.end() || iab == key_id.end())
      fail("tokenizer: '{}': merges[{}] ('{}', '{}') uses a token missing from model.vocab", file,
           r, a, b);
    m->merges.emplace(pair_key(ia->second, ib->second), model::merge{int(r), iab->second});
  }
  for (std::string_view eot : {"<|endoftext|>", "<|end_of_text|>"})
    if (auto it = m->ids.find(eot); it != m->ids.end() && m->eot < 0) m->eot = it->second;

  auto lookup = [&](const std::string& t) { return special_id(m->ids, m->special, key_id, t); };
  auto sp = read_hf_specials(j.value("post_processor", nlohmann::json()), tokenizer_json, n, lookup,
                             read_config);
  m->specials = std::move(sp.rule);
  m->bos_token = sp.bos;
  m->eos_token = sp.eos;
  // tokenizer_config.json's, else one carried in j itself (a GGUF file's, rebuilt as j)
  m->chat_template = !sp.chat_template.empty() ? std::move(sp.chat_template)
                     : j.contains("chat_template") && j["chat_template"].is_string()
                         ? j["chat_template"].get<std::string>()
                         : std::string();
  return finish(std::move(m), pattern.text, pattern.literal, tokenizer_json);
}

}  // namespace zf
