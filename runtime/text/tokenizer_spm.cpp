// SentencePiece ("llama") mode of tokenizer: a vocabulary's tables (from_spm) and the encoding of
// one piece of text, as llama.cpp's llm_tokenizer_spm does it (tokenizer.hpp, "SentencePiece
// mode"). The added-token split and the special rule are the byte-level BPE tokenizer's.
#include <array>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer_model.hpp"

namespace zf {
namespace {

constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

// "<0xXX>" (either case) -> the byte XX; -1 for any other spelling.
int byte_of(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece.back() != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// piece with every U+2581 turned back into ' '.
std::string unescape(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (std::size_t i = 0; i < piece.size();) {
    if (piece.substr(i).starts_with(kSpace)) {
      out.push_back(' ');
      i += kSpace.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

// Bytes of the UTF-8 character that starts with c, by its high nibble alone as llama.cpp's
// unicode_len_utf8 counts (a stray continuation byte is a character of its own).
std::size_t utf8_len(unsigned char c) {
  static constexpr std::array<std::uint8_t, 16> kLen = {1, 1, 1, 1, 1, 1, 1, 1,
                                                        1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

void check_vocab(const spm_vocab& v, const std::string& where) {
  const std::size_t n = v.pieces.size();
  if (n == 0) fail("tokenizer: '{}': the SentencePiece vocabulary is empty", where);
  if (v.scores.size() != n || v.types.size() != n)
    fail("tokenizer: '{}': {} pieces, {} scores and {} token types, expected one of each per token",
         where, n, v.scores.size(), v.types.size());
  auto check_id = [&](int id, const char* what) {
    if (id < -1 || id >= int(n))
      fail("tokenizer: '{}': the {} token id {} is outside the {} tokens", where, what, id, n);
  };
  check_id(v.bos, "bos");
  check_id(v.eos, "eos");
  check_id(v.unk, "unknown");
  if (v.add_bos && v.bos < 0) fail("tokenizer: '{}': add_bos is set but there is no bos", where);
  if (v.add_eos && v.eos < 0) fail("tokenizer: '{}': add_eos is set but there is no eos", where);
}

}  // namespace

tokenizer tokenizer::from_spm(spm_vocab v, const std::filesystem::path& source) {
  const std::string where = source.string();
  check_vocab(v, where);
  const std::size_t n = v.pieces.size();
  auto m = std::make_shared<model>();
  m->bytes.resize(n);
  m->special.assign(n, false);
  std::array<int, 256> byte_token;  // byte -> its "<0xXX>" token (-1: none)
  byte_token.fill(-1);
  for (std::size_t id = 0; id < n; ++id) {
    const std::string& piece = v.pieces[id];
    if (piece.empty()) fail("tokenizer: '{}': token {} is empty", where, id);
    if (!m->piece_ids.emplace(piece, int(id)).second)
      fail("tokenizer: '{}': token {} '{}' appears twice", where, id, piece);
    switch (v.types[id]) {
      case spm_vocab::normal:
        m->bytes[id] = unescape(piece);
        m->ids.emplace(m->bytes[id], int(id));  // an added token's text stays its own
        break;
      case spm_vocab::unknown:
      case spm_vocab::control:
      case spm_vocab::user_defined:
        m->bytes[id] = piece;
        m->add_token(piece, int(id));
        break;
      case spm_vocab::unused:
        break;  // decodes to nothing, as llama.cpp's token_to_piece
      case spm_vocab::byte: {
        const int b = byte_of(piece);
        if (b < 0)
          fail("tokenizer: '{}': byte token {} is '{}', expected \"<0xXX>\"", where, id, piece);
        m->bytes[id] = std::string(1, char(b));
        if (byte_token[b] < 0) byte_token[b] = int(id);
        break;
      }
      default:
        fail("tokenizer: '{}': token {} '{}' has type {}, expected 1 to 6", where, id, piece,
             v.types[id]);
    }
  }
  // Byte tokens come after every ordinary one in `ids`: " " finds "\u2581", not "<0x20>".
  for (int b = 0; b < 256; ++b)
    if (byte_token[b] >= 0) m->ids.emplace(std::string(1, char(b)), byte_token[b]);
  // A byte no symbol covers: its "<0xXX>" token, else the piece of that one byte (llama.cpp's
  // byte_to_token), else unknown.
  for (int b = 0; b < 256; ++b) {
    auto it = m->piece_ids.find(std::string(1, char(b)));
    m->byte_id[b] = byte_token[b] >= 0         ? byte_token[b]
                    : it != m->piece_ids.end() ? it->second
                                               : v.unk;
  }
  m->eot = v.eos;
  m->bos_token = v.bos;
  m->eos_token = v.eos;
  if (v.add_bos) m->specials.prefix = {v.bos};
  if (v.add_eos) m->specials.suffix = {v.eos};
  m->chat_template = std::move(v.chat_template);
  m->spm = std::move(v);
  m->index_added();
  return tokenizer(std::move(m));
}

const spm_vocab* tokenizer::spm() const {
  return model_->spm ? &*model_->spm : nullptr;
}

// One piece of text between added tokens (so at the start or after one): ' ' prefix, spaces as
// U+2581, then score-ordered merges of adjacent symbols, as llama.cpp's llm_tokenizer_spm.
void tokenizer::encode_spm(std::string_view text, std::vector<int>& out) const {
  if (text.empty()) return;  // llama.cpp makes no fragment of empty text: no lone prefix
  const model& m = *model_;
  std::string s;
  s.reserve(text.size() + 2 * kSpace.size());
  if (m.spm->add_space_prefix) s += kSpace;
  for (char c : text) c == ' ' ? s += kSpace : s += c;

  // Symbols: UTF-8 characters of s, a doubly linked list; a merged-away symbol has len 0.
  struct symbol {
    std::size_t start, len;
    int prev, next;
  };
  std::vector<symbol> sym;
  for (std::size_t pos = 0; pos < s.size();) {
    const std::size_t len = std::min(utf8_len(static_cast<unsigned char>(s[pos])), s.size() - pos);
    const int i = int(sym.size());
    sym.push_back({pos, len, i - 1, pos + len == s.size() ? -1 : i + 1});
    pos += len;
  }
  // Candidate merges: best score first, then leftmost. An entry goes stale when either side
  // merges with another neighbour; sizes only grow, so len != left.len + right.len detects it.
  struct bigram {
    float score;
    int left, right;
    std::size_t len;
  };
  auto worse = [](const bigram& a, const bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<bigram, std::vector<bigram>, decltype(worse)> queue(worse);
  auto try_pair = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string_view t(s.data() + sym[l].start, sym[l].len + sym[r].len);
    auto it = m.piece_ids.find(t);
    if (it != m.piece_ids.end()) queue.push({m.spm->scores[it->second], l, r, t.size()});
  };
  for (int i = 1; i < int(sym.size()); ++i) try_pair(i - 1, i);
  while (!queue.empty()) {
    const bigram b = queue.top();
    queue.pop();
    symbol& left = sym[b.left];
    symbol& right = sym[b.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != b.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = b.left;
    try_pair(left.prev, b.left);
    try_pair(b.left, left.next);
  }
  // Every merged symbol is a token; a lone character may not be: byte fallback.
  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view t(s.data() + sym[i].start, sym[i].len);
    if (auto it = m.piece_ids.find(t); it != m.piece_ids.end()) {
      out.push_back(it->second);
      continue;
    }
    for (char c : t) {
      const int id = m.byte_id[static_cast<unsigned char>(c)];
      if (id < 0)
        fail("tokenizer: byte 0x{:02X} has no token (no \"<0x..>\" token, piece or unknown token)",
             static_cast<unsigned char>(c));
      out.push_back(id);
    }
  }
}

}  // namespace zf
