#pragma once
// The character-level vocabulary of the tiny RL policies: a Hugging Face tokenizer.json for
// byte-level BPE with no merges, so every byte is its own token and a task on letters
// ("reverse abc=" -> "cba") is one token per character, which a policy with a 32-64 token
// context can learn in minutes.
//
// Ids: 0..255 are the bytes themselves (id == byte value: 'a' is 97), listed in model.vocab under
// GPT-2's bytes_to_unicode spelling ("Ġ" for ' ', "a" for 'a'); 256 is the added special token
// "<|endoftext|>" (tokenizer::eot()). pre_tokenizer and decoder are ByteLevel (add_prefix_space
// false, use_regex true: the pre-token split cannot matter without merges, but it is what
// load_hf accepts), post_processor null (encode_with_special adds nothing).
#include <string>

namespace zf {

inline constexpr int kByteVocabSize = 257;  // 256 bytes + <|endoftext|>
inline constexpr int kByteVocabEot = 256;   // id of "<|endoftext|>"

// The text of that tokenizer.json (UTF-8 JSON, one object); write it to a file and load it with
// tokenizer::load_hf. Without a tokenizer_config.json beside it, bos_token_id() and
// eos_token_id() are -1; the end of a completion is eot() (256).
std::string byte_level_tokenizer_json();

}  // namespace zf
