#pragma once
// Chat messages -> one prompt string, in the format the model was tuned on. We cannot run the
// Jinja chat template of a tokenizer_config.json or a GGUF file, so the format is chosen as
// llama.cpp's llm_chat_detect_template does: from markers in the template text where the files
// gave one (tokenizer::chat_template), else from the tokenizer's added tokens:
//   Llama-3 (template with <|start_header_id|>, or the tokens <|start_header_id|>,
//   <|end_header_id|>, <|eot_id|>):
//     <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>...
//     <|start_header_id|>assistant<|end_header_id|>\n\n     (content trimmed, as Meta's template)
//   ChatML (template with <|im_start|>, or the tokens <|im_start|>, <|im_end|>; Qwen, many
//   fine-tunes):
//     <|im_start|>user\nHi<|im_end|>\n...<|im_start|>assistant\n
//   Llama-2 / Mistral (template with [INST]): every user turn "[INST] ... [/INST]", the system
//   message in <<SYS>>\n...\n<</SYS>>\n\n before the first user text where the template has
//   <<SYS>> (Llama 2), else as its own paragraph before that text (Mistral has no system role);
//   an assistant turn " answer</s>"; every user turn after the first opens with the BOS text
//   again, as Llama 2's template writes:
//     <s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello.</s><s>[INST] Bye [/INST]
//   Zephyr (template with <|user|> and <|assistant|>; TinyLlama-chat):
//     <s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n
//   plain (anything else, e.g. GPT-2):
//     System: ...\n\nUser: Hi\n\nAssistant:
//   ChatML, Llama-2, Zephyr and plain begin with the text of the tokenizer's
//   prompt_specials().prefix (nothing for GPT-2 or Qwen 2; BOS for a tokenizer that adds one), as
//   templates write {{ bos_token }} for exactly the models that want it.
// The result is text that already holds its leading special tokens (Llama 3's <|begin_of_text|>):
// encode it with tokenizer::encode, never encode_with_special, which would add BOS a second time.
// That is transformers' apply_chat_template(tokenize=True): render, then encode with
// add_special_tokens=False (vLLM's chat endpoint does the same); encode_chat does both.
#include <string>
#include <vector>

#include "runtime/text/tokenizer.hpp"

namespace zf::serve {
struct chat_message {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};
}  // namespace zf::serve

namespace zf {

enum class chat_format { llama3, chatml, llama2, zephyr, plain };

// Which format format_chat uses for this tokenizer.
chat_format detect_chat_format(const tokenizer& tok);

// Roles must be "system", "user" or "assistant"; another role throws zf::error naming it and
// the message's index. The prompt ends with the assistant's turn opened, ready to generate.
std::string format_chat(const tokenizer& tok, const std::vector<serve::chat_message>& msgs);

// tok.encode(format_chat(tok, msgs)): the prompt's ids, BOS once where the model wants it.
std::vector<int> encode_chat(const tokenizer& tok, const std::vector<serve::chat_message>& msgs);

}  // namespace zf
