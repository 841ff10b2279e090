#include "runtime/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "runtime/error.hpp"

namespace zf {

namespace {

constexpr std::string_view kEotText = "<|endoftext|>";
// GPT-2's pre-tokenizer (encoder.py in openai/gpt-2).
constexpr std::string_view kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Bound on the per-word cache: it is cleared when it grows past this many entries, so a
// long-running process encoding unbounded text keeps bounded memory.
constexpr std::size_t kMaxCacheEntries = std::size_t{1} << 18;

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100...
std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> map{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = printable[b] ? char32_t(b) : next++;
  return map;
}

// Inverse of bytes_to_unicode over U+0000..U+0143 (-1: not a byte's character).
std::array<int, 324> unicode_to_bytes() {
  const auto b2u = bytes_to_unicode();
  std::array<int, 324> u2b;  // bytes_to_unicode maps onto U+0021..U+0143
  u2b.fill(-1);
  for (int b = 0; b < 256; ++b) u2b[b2u[b]] = b;
  return u2b;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("tokenizer: cannot open '{}'", p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("tokenizer: cannot read '{}'", p.string());
  return std::move(ss).str();
}

// Decodes one UTF-8 code point at s[i], advancing i; returns -1 on a malformed sequence.
long next_code_point(std::string_view s, std::size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return -1;
  long cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc >> 6) != 2) return -1;
    cp = (cp << 6) | (cc & 0x3F);
  }
  i += len;
  return cp;
}

std::uint64_t pair_key(int a, int b) {
  return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
}

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace

struct tokenizer::model {
  std::vector<std::string> bytes;  // id -> raw bytes
  std::array<int, 256> byte_id{};  // single byte -> id
  struct merge {
    int rank;
    int id;
  };
  std::unordered_map<std::uint64_t, merge> merges;  // (left id, right id) -> rank, merged id
  // raw bytes -> id for every token (an added token's content wins over an ordinary token)
  std::unordered_map<std::string, int, string_hash, std::equal_to<>> ids;
  struct added_token {
    std::string text;
    int id;
  };
  std::vector<added_token> added;
  std::array<std::vector<int>, 256>
      added_by_first;          // first byte -> indices into added, longest first
  std::vector<bool> special;   // id -> is an added token
  bool ignore_merges = false;  // a pre-token found in `ids` maps to its id without merging
  int eot = -1;
  pcre2_code* re = nullptr;

  void add_token(std::string text, int id) {
    ids.insert_or_assign(text, id);
    special.at(id) = true;
    added.push_back({std::move(text), id});
  }

  model() = default;
  model(const model&) = delete;
  model& operator=(const model&) = delete;
  ~model() { pcre2_code_free(re); }
};

struct tokenizer::state {
  std::unordered_map<std::string, std::vector<int>, string_hash, std::equal_to<>> cache;
  pcre2_match_data* md = nullptr;
  std::vector<int> parts;  // scratch for bpe
  std::vector<int> ranks;  // scratch for bpe

  explicit state(const model& m) : md(pcre2_match_data_create_from_pattern(m.re, nullptr)) {
    if (!md) fail("tokenizer: out of memory creating PCRE2 match data");
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() { pcre2_match_data_free(md); }
};

tokenizer tokenizer::load_gpt2(const std::filesystem::path& dir) {
  auto m = std::make_shared<model>();
  const auto u2b = unicode_to_bytes();

  // encoder.json: {"<token as bytes_to_unicode text>": id, ...}
  const auto enc_path = dir / "encoder.json";
  const std::string enc_text = read_file(enc_path);
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(enc_text);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer: '{}' is not valid JSON: {}", enc_path.string(), e.what());
  }
  if (!enc.is_object() || enc.empty())
    fail("tokenizer: '{}' must be a non-empty JSON object of token -> id", enc_path.string());
  const std::size_t n = enc.size();
  m->bytes.resize(n);
  std::vector<bool> seen(n, false);
  auto& bytes_to_id = m->ids;
  bytes_to_id.reserve(n);
  for (const auto& [key, value] : enc.items()) {
    if (!value.is_number_integer())
      fail("tokenizer: '{}': id of token '{}' is not an integer", enc_path.string(), key);
    const auto id = value.get<long long>();
    if (id < 0 || std::size_t(id) >= n || seen[id])
      fail("tokenizer: '{}': token '{}' has id {}, expected unique ids in [0, {})",
           enc_path.string(), key, id, n);
    seen[id] = true;
    std::string raw;
    if (key == kEotText) {
      raw = key;
      m->eot = int(id);
    } else {
      for (std::size_t i = 0; i < key.size();) {
        const long cp = next_code_point(key, i);
        if (cp < 0 || cp >= long(u2b.size()) || u2b[cp] < 0)
          fail("tokenizer: '{}': token '{}' is not bytes_to_unicode text", enc_path.string(), key);
        raw.push_back(char(u2b[cp]));
      }
    }
    if (raw.empty()) fail("tokenizer: '{}': empty token for id {}", enc_path.string(), id);
    if (!bytes_to_id.emplace(raw, int(id)).second)
      fail("tokenizer: '{}': token '{}' appears twice", enc_path.string(), key);
    m->bytes[id] = std::move(raw);
  }
  if (m->eot < 0) fail("tokenizer: '{}' has no '{}' token", enc_path.string(), kEotText);
  for (int b = 0; b < 256; ++b) {
    auto it = bytes_to_id.find(std::string(1, char(b)));
    if (it == bytes_to_id.end())
      fail("tokenizer: '{}' lacks the single-byte token for byte {}", enc_path.string(), b);
    m->byte_id[b] = it->second;
  }

  // vocab.bpe: "#version" line, then one merge "left right" per line, by rank.
  const auto bpe_path = dir / "vocab.bpe";
  const std::string bpe_text = read_file(bpe_path);
  std::size_t line_no = 0;
  int rank = 0;
  std::string a, b;
  for (std::size_t pos = 0; pos < bpe_text.size();) {
    std::size_t eol = bpe_text.find('\n', pos);
    if (eol == std::string::npos) eol = bpe_text.size();
    std::string_view line(bpe_text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos)
      fail("tokenizer: '{}' line {}: expected 'left right', found '{}'", bpe_path.string(), line_no,
           line);
    auto to_bytes = [&](std::string_view tok, std::string& raw) {
      raw.clear();
      for (std::size_t i = 0; i < tok.size();) {
        const long cp = next_code_point(tok, i);
        if (cp < 0 || cp >= long(u2b.size()) || u2b[cp] < 0)
          fail("tokenizer: '{}' line {}: '{}' is not bytes_to_unicode text", bpe_path.string(),
               line_no, tok);
        raw.push_back(char(u2b[cp]));
      }
    };
    to_bytes(line.substr(0, sp), a);
    to_bytes(line.substr(sp + 1), b);
    auto ia = bytes_to_id.find(a);
    auto ib = bytes_to_id.find(b);
    auto iab = bytes_to_id.find(a + b);
    if (ia == bytes_to_id.end() || ib == bytes_to_id.end() || iab == bytes_to_id.end())
      fail("tokenizer: '{}' line {}: merge '{}' uses a token missing from encoder.json",
           bpe_path.string(), line_no, line);
    m->merges.emplace(pair_key(ia->second, ib->second), model::merge{rank++, iab->second});
  }
  if (m->merges.empty()) fail("tokenizer: '{}' holds no merges", bpe_path.string());
  m->special.assign(n, false);
  m->add_token(std::string(kEotText), m->eot);
  return finish(std::move(m), kPattern, false, dir);
}

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

}  // namespace

tokenizer tokenizer::load_hf(const std::filesystem::path& tokenizer_json) {
  try {
    return load_hf_json(tokenizer_json);
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
    fail("tokenizer: '{}': unexpected structure: {}", tokenizer_json.string(), e.what());
  }
}

tokenizer tokenizer::load_hf_json(const std::filesystem::path& tokenizer_json) {
  const std::string file = tokenizer_json.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(tokenizer_json));
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer: '{}' is not valid JSON: {}", file, e.what());
  }
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
  auto id_of = [&](const nlohmann::json& v, const std::string& what) {
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() >= INT_MAX)
      fail("tokenizer: '{}': id of {} is {}, expected a non-negative integer", file, what,
           v.dump());
    return v.get<int>();
  };
  int n = 0;
  for (const auto& [key, v] : vocab.items()) n = std::max(n, id_of(v, "'" + key + "'") + 1);
  for (const auto& a : added) {
    if (!a.is_object()) fail("tokenizer: '{}': added token {} is not an object", file, a.dump());
    n = std::max(n, id_of(a.value("id", nlohmann::json()), a.dump()) + 1);
  }

  auto m = std::make_shared<model>();
  m->bytes.resize(n);
  m->special.assign(n, false);
  m->ignore_merges = jm.value("ignore_merges", false);
  const auto u2b = unicode_to_bytes();
  std::unordered_map<std::string, int, string_hash, std::equal_to<>> key_id;  // vocab spelling
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
  return finish(std::move(m), pattern.text, pattern.literal, tokenizer_json);
}

// Shared tail of the loaders: the added-token index and the compiled pre-tokenizer pattern.
tokenizer tokenizer::finish(std::shared_ptr<model> m, std::string_view pattern, bool literal,
                            const std::filesystem::path& source) {
  std::stable_sort(m->added.begin(), m->added.end(),
                   [](const auto& a, const auto& b) { return a.text.size() > b.text.size(); });
  for (std::size_t i = 0; i < m->added.size(); ++i)
    m->added_by_first[static_cast<unsigned char>(m->added[i].text[0])].push_back(int(i));
  int errcode = 0;
  PCRE2_SIZE erroffset = 0;
  const uint32_t opts =
      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0u);
  m->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts,
                        &errcode, &erroffset, nullptr);
  if (!m->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(errcode, msg, sizeof msg);
    fail("tokenizer: '{}': PCRE2 cannot compile the pre-tokenizer pattern at offset {}: {}",
         source.string(), erroffset, reinterpret_cast<const char*>(msg));
  }
  // JIT is an optimisation: where it is unavailable pcre2_match interprets the pattern instead.
  pcre2_jit_compile(m->re, PCRE2_JIT_COMPLETE);
  return tokenizer(std::move(m));
}

tokenizer::tokenizer(std::shared_ptr<const model> m)
    : model_(std::move(m)), state_(std::make_unique<state>(*model_)) {}

tokenizer::tokenizer(const tokenizer& other)
    : model_(other.model_), state_(model_ ? std::make_unique<state>(*model_) : nullptr) {}

tokenizer& tokenizer::operator=(const tokenizer& other) {
  if (this != &other) {
    model_ = other.model_;
    state_ = model_ ? std::make_unique<state>(*model_) : nullptr;
  }
  return *this;
}

tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

int tokenizer::eot() const {
  return model_->eot;
}
int tokenizer::vocab_size() const {
  return int(model_->bytes.size());
}
int tokenizer::token_id(std::string_view token) const {
  auto it = model_->ids.find(token);
  return it == model_->ids.end() ? -1 : it->second;
}
bool tokenizer::is_special(int id) const {
  return id >= 0 && id < vocab_size() && model_->special[id];
}
std::size_t tokenizer::cache_size() const {
  return state_->cache.size();
}

const std::string& tokenizer::token_bytes(int id) const {
  if (id < 0 || id >= vocab_size())
    fail("tokenizer: token id {} is out of range [0, {})", id, vocab_size());
  return model_->bytes[id];
}

std::string tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  for (int id : ids) out += token_bytes(id);
  return out;
}

// Byte-pair merge of one pre-token: repeatedly merge the adjacent pair with the lowest rank
// (leftmost on ties), as GPT-2's encoder.py does.
void tokenizer::encode_word(std::string_view word, std::vector<int>& out) const {
  const model& m = *model_;
  if (word.size() == 1) {
    out.push_back(m.byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (m.ignore_merges) {
    if (auto it = m.ids.find(word); it != m.ids.end()) {
      out.push_back(it->second);
      return;
    }
  }
  state& st = *state_;
  if (auto it = st.cache.find(word); it != st.cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  auto& parts = st.parts;
  auto& ranks = st.ranks;  // ranks[i]: rank of merging parts[i] and parts[i + 1]
  parts.clear();
  for (char c : word) parts.push_back(m.byte_id[static_cast<unsigned char>(c)]);
  auto rank_of = [&](int a, int b) {
    auto it = m.merges.find(pair_key(a, b));
    return it == m.merges.end() ? INT_MAX : it->second.rank;
  };
  ranks.resize(parts.size() - 1);
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) ranks[i] = rank_of(parts[i], parts[i + 1]);
  while (parts.size() > 1) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < ranks.size(); ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == INT_MAX) break;
    parts[best] = m.merges.find(pair_key(parts[best], parts[best + 1]))->second.id;
    parts.erase(parts.begin() + std::ptrdiff_t(best) + 1);
    ranks.erase(ranks.begin() + std::ptrdiff_t(best));
    if (best > 0) ranks[best - 1] = rank_of(parts[best - 1], parts[best]);
    if (best + 1 < parts.size()) ranks[best] = rank_of(parts[best], parts[best + 1]);
  }
  out.insert(out.end(), parts.begin(), parts.end());
  if (st.cache.size() >= kMaxCacheEntries) st.cache.clear();
  st.cache.emplace(std::string(word), parts);
}

// Pre-tokenize text (which holds no special token) and BPE each piece.
void tokenizer::encode_ordinary(std::string_view text, std::vector<int>& out) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  pcre2_match_data* md = state_->md;
  std::size_t off = 0;
  while (off < text.size()) {
    const int rc = pcre2_match(model_->re, subject, text.size(), off, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      // Only invalid UTF-8 is left: no valid character escapes the pattern's last alternatives.
      encode_word(text.substr(off), out);
      return;
    }
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("tokenizer: PCRE2 match failed at byte {}: {}", off, reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const std::size_t start = ov[0], end = ov[1];
    if (end <= start || start < off)
      fail("tokenizer: pre-tokenizer matched an empty piece at byte {}", start);
    // PCRE2_MATCH_INVALID_UTF skips invalid sequences; they become pieces of their own.
    if (start > off) encode_word(text.substr(off, start - off), out);
    encode_word(text.substr(start, end - start), out);
    off = end;
  }
}

// Splits on added tokens (leftmost, then longest), encoding the text between them.
void tokenizer::encode_append(std::string_view text, std::vector<int>& out) const {
  const model& m = *model_;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const model::added_token* hit = nullptr;
    for (int k : m.added_by_first[static_cast<unsigned char>(text[i])])
      if (text.substr(i).starts_with(m.added[k].text)) {
        hit = &m.added[k];
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    encode_ordinary(text.substr(start, i - start), out);
    out.push_back(hit->id);
    i += hit->text.size();
    start = i;
  }
  encode_ordinary(text.substr(start), out);
}

std::vector<int> tokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 1);
  encode_append(text, out);
  return out;
}

}  // namespace zf
