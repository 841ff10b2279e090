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

}  // namespace

chat_format detect_chat_format(const tokenizer& tok) {
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
