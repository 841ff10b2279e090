#include "runtime/text/chat_template.hpp"

#include <string_view>

#include "runtime/core/error.hpp"

namespace zf {

namespace {

bool has_special(const tokenizer& tok, std::string_view text) {
  return tok.is_special(tok.token_id(text));
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The text of the special tokens the tokenizer puts before a prompt (added tokens, so encode()
// turns the text back into the same ids).
std::string prefix_text(const tokenizer& tok) {
  std::string out;
  for (int id : tok.prompt_specials().prefix) out += tok.token_bytes(id);
  return out;
}

// The end-of-sequence token's text ("</s>"), "" where the tokenizer names none.
std::string eos_text(const tokenizer& tok) {
  const int e = tok.eos_token_id();
  return e >= 0 && e < tok.vocab_size() && tok.is_special(e) ? tok.token_bytes(e) : std::string();
}

// Llama-2 / Mistral [INST] turns (chat_template.hpp); the system message goes into the first
// user turn.
void llama2_chat(const tokenizer& tok, const std::vector<serve::chat_message>& msgs,
                 std::string& out) {
  const bool sys_block = tok.chat_template().find("<<SYS>>") != std::string::npos;
  const std::string bos = prefix_text(tok);
  std::string system;
  bool first_user = true;
  out += bos;
  for (const auto& m : msgs) {
    if (m.role == "system") {
      system = m.content;
    } else if (m.role == "user") {
      if (!first_user) out += bos;
      out += "[INST] ";
      if (!system.empty())
        out += sys_block ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" : system + "\n\n";
      system.clear();
      out += std::string(trim(m.content)) + " [/INST]";
      first_user = false;
    } else {
      out += " " + std::string(trim(m.content)) + eos_text(tok);
    }
  }
}

}  // namespace

chat_format detect_chat_format(const tokenizer& tok) {
  // The template's markers first, in llama.cpp's order of checks (llm_chat_detect_template).
  const std::string& t = tok.chat_template();
  auto has = [&](std::string_view s) { return t.find(s) != std::string::npos; };
  if (has("<|start_header_id|>") && has_special(tok, "<|start_header_id|>"))
    return chat_format::llama3;
  if (has("<|im_start|>")) return chat_format::chatml;
  if (has("[INST]")) return chat_format::llama2;
  if (has("<|user|>") && has("<|assistant|>")) return chat_format::zephyr;
  if (has_special(tok, "<|start_header_id|>") && has_special(tok, "<|end_header_id|>") &&
      has_special(tok, "<|eot_id|>"))
    return chat_format::llama3;
  if (has_special(tok, "<|im_start|>") && has_special(tok, "<|im_end|>"))
    return chat_format::chatml;
  return chat_format::plain;
}

std::string format_chat(const tokenizer& tok, const std::vector<serve::chat_message>& msgs) {
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    const auto& r = msgs[i].role;
    if (r != "system" && r != "user" && r != "assistant")
      fail("chat: message {} has role '{}', expected system, user or assistant", i, r);
  }
  std::string out;
  switch (detect_chat_format(tok)) {
    case chat_format::llama3:
      if (has_special(tok, "<|begin_of_text|>")) out += "<|begin_of_text|>";
      for (const auto& m : msgs) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case chat_format::chatml:
      out += prefix_text(tok);
      for (const auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case chat_format::llama2:
      llama2_chat(tok, msgs, out);
      break;
    case chat_format::zephyr:
      out += prefix_text(tok);
      for (const auto& m : msgs) out += "<|" + m.role + "|>\n" + m.content + eos_text(tok) + "\n";
      out += "<|assistant|>\n";
      break;
    case chat_format::plain:
      out += prefix_text(tok);
      for (const auto& m : msgs) {
        // "system" -> "System": the role with its first letter upper-cased.
        out += char(m.role[0] - 'a' + 'A');
        out += m.role.substr(1) + ": " + m.content + "\n\n";
      }
      out += "Assistant:";
      break;
  }
  return out;
}

std::vector<int> encode_chat(const tokenizer& tok, const std::vector<serve::chat_message>& msgs) {
  return tok.encode(format_chat(tok, msgs));
}

}  // namespace zf
