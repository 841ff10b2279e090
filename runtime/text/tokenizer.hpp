#pragma once
// Byte-level BPE tokenizer: GPT-2's own files (the "gpt2" / r50k encoding, exact GPT-2 ids) or a
// Hugging Face tokenizer.json of the same family (GPT-2, Llama-3, Qwen-2 style).
//
// encode: text is first split on the added (special) tokens, leftmost first and longest at a
// position ("<|endoftext|>" -> eot(), 50256, for GPT-2); each piece is pre-tokenized with a
// regex, GPT-2's by default
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (PCRE2, UTF + UCP, JIT-compiled) or the Split regex of a tokenizer.json, and each pre-token's
// bytes are merged by merge rank (with ignore_merges, a pre-token that is itself in the
// vocabulary maps to its id directly, as Hugging Face does). encode never adds BOS/EOS
// (transformers' add_special_tokens=False); encode_with_special wraps it in the special tokens
// the tokenizer's own files ask for (see "Special tokens" below), never a rule by architecture.
// Input need not be valid UTF-8: invalid sequences never match the pattern, so each run of them
// becomes its own pre-token and is byte-level encoded like any other; decode(encode(x)) == x for
// every byte string x.
//
// Special tokens (prompt_specials, encode_with_special), as transformers and vLLM decide them:
//   1. tokenizer.json "post_processor" gives the rule: null or absent, ByteLevel: nothing;
//      TemplateProcessing: the SpecialToken pieces before / after $A in its "single" template,
//      with their ids from its "special_tokens"; BertProcessing / RobertaProcessing: cls before,
//      sep after; Sequence: its processors applied in order (a later one wraps the earlier ones'
//      result). Any other type throws zf::error naming the file and the type.
//   2. tokenizer_config.json beside tokenizer.json, when it gives "add_bos_token" /
//      "add_eos_token" explicitly (true / false), overrides that side: prefix becomes {bos} or {},
//      suffix {eos} or {}, bos / eos being its "bos_token" / "eos_token" (a string or an
//      AddedToken object {"content": ...}) looked up among the added tokens, then model.vocab. A
//      side the config does not name keeps the post_processor's tokens. This is transformers'
//      rule: LlamaTokenizerFast (and, in transformers 5, every fast tokenizer given either flag)
//      rebuilds the post_processor as TemplateProcessing "[bos:0] $A:0 [eos:0]" from the flags;
//      without them the tokenizer.json post_processor stands (PreTrainedTokenizerFast, which
//      Llama 3, Qwen 2 and GPT-2 checkpoints name). Where a single flag is given transformers
//      differs by version for the other side (4.x LlamaTokenizerFast: add_bos_token defaults to
//      true, add_eos_token to false; 5.x: both default to false); we keep the post_processor's.
//      A flag that is true with no resolvable bos_token / eos_token throws zf::error (as 4.x's
//      "add_bos_token = True but bos_token = None"); a non-boolean flag or an unknown token type
//      throws too, naming tokenizer_config.json.
//   GPT-2's own files (load_gpt2) add nothing, as GPT2TokenizerFast does.
// A chat prompt is different: transformers' apply_chat_template renders text that already holds
// the leading special tokens (Llama 3's template writes <|begin_of_text|>) and encodes it with
// add_special_tokens=False, as vLLM's chat endpoint does; so chat text (format_chat,
// chat_template.hpp) goes through encode(), never encode_with_special, or BOS would be doubled.
//
// SentencePiece mode (from_spm, tokenizer_spm.cpp): the "llama" tokenizer of Llama-2-era GGUF
// files, as llama.cpp's llm_tokenizer_spm encodes. encode splits on the control, unknown and
// user-defined tokens' text as above; every other piece gets a leading ' ' when it is the first
// piece or follows such a token (add_space_prefix), its spaces become '\u2581', its UTF-8
// characters are the initial symbols, and the adjacent pair whose concatenation is a token with
// the highest score merges first (leftmost on ties) until no pair is a token; a symbol left that
// is no token becomes one "<0xXX>" token per byte (else the byte's own token, else unknown).
// token_bytes / decode: '\u2581' -> ' ', "<0xXX>" -> that byte, control / unknown / user-defined
// tokens -> their text, unused tokens -> nothing. decode is the plain concatenation of
// token_bytes, so streaming (text_stream) and decode agree; unlike llama.cpp's detokenize it
// keeps the leading space that add_space_prefix put before the first word: decode(encode(s))
// is " " + s for a non-empty s that does not start with a special token.
//
// Threading: the merge tables are immutable and shared between copies, but each object owns a
// per-word cache and PCRE2 match data that encode() mutates. One object must be used from one
// thread at a time; copy it (cheap: the tables are shared) to encode on several threads.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zf {

// The special tokens a tokenizer adds around one text (a single sequence: the "single" template).
struct special_rule {
  std::vector<int> prefix;  // before the text's ids, e.g. {128000} (<|begin_of_text|>), Llama 3
  std::vector<int> suffix;  // after them, e.g. {eos} where add_eos_token is true
  bool operator==(const special_rule&) const = default;
};

// A SentencePiece vocabulary as a GGUF file's tokenizer.ggml.* keys give it (model "llama").
struct spm_vocab {
  // token type, as tokenizer.ggml.token_type and llama.cpp's llama_token_type number them
  enum type : int { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
  std::vector<std::string> pieces;   // id -> piece, U+2581 for a space; a byte token is "<0xXX>"
  std::vector<float> scores;         // id -> merge priority (higher merges first)
  std::vector<int> types;            // id -> type
  int bos = -1, eos = -1, unk = -1;  // -1: none
  bool add_bos = true, add_eos = false;  // prompt_specials: {bos} before, {eos} after
  bool add_space_prefix = true;
  std::string chat_template;  // the file's tokenizer.chat_template ("" : none)
};

class tokenizer {
 public:
  // dir holds encoder.json and vocab.bpe; a missing, unreadable or corrupt file throws zf::error
  // naming the file.
  static tokenizer load_gpt2(const std::filesystem::path& dir);
  // A Hugging Face tokenizer.json (or the folder holding it): model.type "BPE" (vocab; merges as
  // "a b" strings or [a, b] pairs; ignore_merges), added_tokens, no normalizer, pre_tokenizer
  // ByteLevel (use_regex: the GPT-2 pattern) or Sequence [Split{Regex or String, Isolated},
  // ByteLevel{use_regex false}], post_processor as "Special tokens" above. Anything else
  // (WordPiece, byte_fallback, a normalizer, add_prefix_space...) throws zf::error naming the
  // file and the field. tokenizer_config.json in the same folder is read when present.
  static tokenizer load_hf(const std::filesystem::path& tokenizer_json);
  // The same from a parsed tokenizer.json object j (a GGUF file's tokenizer, rebuilt as one);
  // errors name `source`; tokenizer_config.json beside it is read only when read_config.
  static tokenizer from_hf_json(const nlohmann::json& j, const std::filesystem::path& source,
                                bool read_config = false);
  // A SentencePiece tokenizer (see "SentencePiece mode" above). zf::error naming `source` for
  // tables of different lengths, an unknown type, a byte token not spelled "<0xXX>", a duplicate
  // piece, a bos / eos / unk id out of range, or add_bos / add_eos without that id.
  static tokenizer from_spm(spm_vocab v, const std::filesystem::path& source);

  tokenizer(const tokenizer& other);
  tokenizer& operator=(const tokenizer& other);
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // Token ids of text; an added token's text anywhere in text becomes its id.
  std::vector<int> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int>& out) const;
  // prompt_specials().prefix + encode(text) + prompt_specials().suffix: the ids of transformers'
  // tokenizer(text) (add_special_tokens=True), what a completion prompt is fed as. Text that
  // itself starts with BOS gets a second one, as in transformers and vLLM.
  std::vector<int> encode_with_special(std::string_view text) const;
  // What a prompt is fed as here (serving and `zeroflow score` alike): encode_with_special, but a
  // text that already starts with the special prefix (a chat template's <|begin_of_text|>) does
  // not get it twice.
  std::vector<int> encode_prompt(std::string_view text) const;
  // What encode_with_special adds (see "Special tokens" above); empty for load_gpt2.
  const special_rule& prompt_specials() const;

  // Concatenated bytes of ids (the result may hold partial UTF-8 at its ends). An id outside
  // [0, vocab_size()) throws zf::error.
  std::string decode(std::span<const int> ids) const;
  // Raw bytes of one id (for streaming decode). An id out of range throws zf::error.
  const std::string& token_bytes(int id) const;

  // The end-of-text token: 50256 for GPT-2; for load_hf the id of "<|endoftext|>" or else of
  // "<|end_of_text|>", -1 if neither exists (a chat model's stop token is its config's eos_id);
  // for from_spm its eos ("</s>" for Llama 2), the token that ends a document there.
  int eot() const;
  int vocab_size() const;  // 50257 for GPT-2
  // Ids of tokenizer_config.json's "bos_token" / "eos_token"; -1 without that file, without the
  // field or where it names no token (load_gpt2: -1); from_spm: the vocabulary's bos / eos.
  int bos_token_id() const;
  int eos_token_id() const;
  // Id of the token whose bytes are exactly `token` (an added token's content, or an ordinary
  // token's raw bytes, not its bytes_to_unicode spelling); -1 if there is none. from_spm: an
  // ordinary token's bytes are its piece with ' ' for U+2581, and where two tokens have the
  // same bytes (" " is both "\u2581" and "<0x20>") the ordinary one is found.
  int token_id(std::string_view token) const;
  // True for added tokens (<|endoftext|>, <|im_start|>...; from_spm: control, unknown and
  // user-defined tokens); false for ordinary ones and ids out of range.
  bool is_special(int id) const;

  // The vocabulary as files spell it (a GGUF file's tokenizer.ggml.tokens / .merges): an ordinary
  // token in GPT-2's bytes_to_unicode spelling, an added token as its text; the merges by rank
  // as (left id, right id). from_spm: the piece; no merges. An id out of range throws zf::error.
  std::string token_spelling(int id) const;
  std::vector<std::pair<int, int>> merge_pairs() const;

  // The pre-tokenizer regex (GPT-2's for load_gpt2, a tokenizer.json's Split regex otherwise);
  // empty for a literal Split String pattern. A GGUF export names it (tokenizer.ggml.pre).
  std::string_view pre_tokenizer_pattern() const;
  // tokenizer.json's model.ignore_merges (Llama 3): a pre-token in the vocabulary is one id.
  bool ignores_merges() const;

  // The SentencePiece vocabulary of a from_spm tokenizer (a GGUF export writes it back);
  // nullptr for byte-level BPE.
  const spm_vocab* spm() const;

  // The chat template text the files gave (tokenizer_config.json's "chat_template", a GGUF
  // file's tokenizer.chat_template; "" where none). Not run (it is Jinja): detect_chat_format
  // (chat_template.hpp) reads which format it writes.
  const std::string& chat_template() const;

  // Number of distinct pre-tokens currently cached (for tests and diagnostics).
  std::size_t cache_size() const;

 private:
  struct model;
  struct state;
  explicit tokenizer(std::shared_ptr<const model> m);
  static tokenizer load_hf_json(const std::filesystem::path& tokenizer_json);
  static tokenizer finish(std::shared_ptr<model> m, std::string_view pattern, bool literal,
                          const std::filesystem::path& source);
  void encode_word(std::string_view word, std::vector<int>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int>& out) const;
  void encode_spm(std::string_view text, std::vector<int>& out) const;  // tokenizer_spm.cpp

  std::shared_ptr<const model> model_;
  mutable std::unique_ptr<state> state_;  // per-word cache + match data; see "Threading" above
};

}  // namespace zf
