#pragma once
// The text side every engine backend shares (the engine in this process, actors/engine_backend;
// one in another, actors/engine_client): tokenization with the model's special tokens
// (tokenizer::encode_prompt), its chat format and a token's bytes. encode and chat_prompt take a
// lock (the tokenizer's caches are not thread-safe); token_bytes reads immutable tables.
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/serve/serving.hpp"
#include "runtime/text/chat_template.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::actors {

class text_backend : public serve::completion_backend {
 public:
  std::vector<int> encode(std::string_view text) const override {
    std::lock_guard lk(tok_mu_);
    return tok_.encode_prompt(text);
  }
  std::string chat_prompt(const std::vector<serve::chat_message>& m) const override {
    std::lock_guard lk(tok_mu_);
    return format_chat(tok_, m);
  }
  std::string token_bytes(int id) const override { return tok_.token_bytes(id); }

 protected:
  explicit text_backend(tokenizer tok) : tok_(std::move(tok)) {}
  tokenizer tok_;

 private:
  mutable std::mutex tok_mu_;
};

}  // namespace zf::actors
