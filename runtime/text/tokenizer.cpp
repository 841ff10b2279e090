#include "runtime/text/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer_model.hpp"

namespace zf {

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

// Shared tail of the loaders: the added-token index and the compiled pre-tokenizer pattern.
tokenizer tokenizer::finish(std::shared_ptr<model> m, std::string_view pattern, bool literal,
                            const std::filesystem::path& source) {
  m->index_added();
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
  m->pattern = std::string(pattern);
  m->pattern_literal = literal;
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
int tokenizer::bos_token_id() const {
  return model_->bos_token;
}
int tokenizer::eos_token_id() const {
  return model_->eos_token;
}
const special_rule& tokenizer::prompt_specials() const {
  return model_->specials;
}
int tokenizer::token_id(std::string_view token) const {
  auto it = model_->ids.find(token);
  return it == model_->ids.end() ? -1 : it->second;
}
bool tokenizer::is_special(int id) const {
  return id >= 0 && id < vocab_size() && model_->special[id];
}
std::string tokenizer::token_spelling(int id) const {
  const std::string& raw = token_bytes(id);
  if (model_->spm) return model_->spm->pieces[std::size_t(id)];
  if (model_->special[id]) return raw;
  static const auto b2u = bytes_to_unicode();
  std::string out;
  for (unsigned char c : raw) {  // UTF-8 of the code point (all below U+0800)
    const char32_t u = b2u[c];
    if (u < 0x80) {
      out.push_back(char(u));
    } else {
      out.push_back(char(0xC0 | (u >> 6)));
      out.push_back(char(0x80 | (u & 0x3F)));
    }
  }
  return out;
}

std::vector<std::pair<int, int>> tokenizer::merge_pairs() const {
  std::vector<std::pair<int, std::uint64_t>> ranked;  // (rank, pair) in rank order
  ranked.reserve(model_->merges.size());
  for (const auto& [key, m] : model_->merges) ranked.emplace_back(m.rank, key);
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::pair<int, int>> out;
  out.reserve(ranked.size());
  for (const auto& [rank, key] : ranked) out.emplace_back(int(key >> 32), int(key & 0xffffffffu));
  return out;
}

std::string_view tokenizer::pre_tokenizer_pattern() const {
  return model_->pattern_literal ? std::string_view() : std::string_view(model_->pattern);
}

bool tokenizer::ignores_merges() const {
  return model_->ignore_merges;
}

const std::string& tokenizer::chat_template() const {
  return model_->chat_template;
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
  parts.clear();
  for (char c : word) parts.push_back(m.byte_id[static_cast<unsigned char>(c)]);
  bpe::bpe_merge(
      parts,
      [&m](int a, int b) {
        auto it = m.merges.find(pair_key(a, b));
        return it == m.merges.end() ? bpe::merge_result{}
                                    : bpe::merge_result{it->second.rank, it->second.id};
      },
      st.bpe);
  out.insert(out.end(), parts.begin(), parts.end());
  if (st.cache.size() >= kMaxCacheEntries) st.cache.clear();
  st.cache.emplace(std::string(word), parts);
}

// Pre-tokenize text (which holds no special token) and BPE each piece.
void tokenizer::encode_ordinary(std::string_view text, std::vector<int>& out) const {
  if (model_->spm) {  // a piece at the start or after an added token: see encode_spm
    encode_spm(text, out);
    return;
  }
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

std::vector<int> tokenizer::encode_with_special(std::string_view text) const {
  const special_rule& r = model_->specials;
  std::vector<int> out(r.prefix);
  out.reserve(r.prefix.size() + text.size() / 3 + 1 + r.suffix.size());
  encode_append(text, out);
  out.insert(out.end(), r.suffix.begin(), r.suffix.end());
  return out;
}

std::vector<int> tokenizer::encode_prompt(std::string_view text) const {
  std::vector<int> ids = encode_with_special(text);
  const std::vector<int>& pre = model_->specials.prefix;
  const std::size_t n = pre.size();
  if (n && ids.size() >= 2 * n && std::equal(pre.begin(), pre.end(), ids.begin() + long(n)))
    ids.erase(ids.begin(), ids.begin() + long(n));
  return ids;
}

}  // namespace zf
