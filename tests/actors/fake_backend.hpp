#pragma once
// A serve::completion_backend for gateway tests, with no model: words are tokens (encode splits
// on spaces and numbers words in order of first sight), and choice i of a request "generates"
// the prompt's words again, cycling, one per step: token k is " " + word[k % P] (+ "/i" for
// i > 0). A thread of its own runs one step every token_delay_ms for every running request,
// applies max_tokens and stop strings like the real engine (text never contains a prefix of a
// stop string that later matches), and answers cancel() with "cancelled" final events.
// Token id k's bytes are "<k>". With sampling.logprobs = N >= 0 each event carries logprobs: the
// token at -0.5, and its top N are ids token, token+1, ... at -0.5, -1.5, ...
// Knobs: token_delay_ms, max_active (more running requests get 429 with retry_after_s),
// hold_encode() (encode blocks until release_encode(): a slow tokenizer).
// Records: every submitted request and every cancel() id.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::testing {

class fake_backend : public serve::completion_backend {
 public:
  explicit fake_backend(int context_length = 256) : ctx_(context_length) {
    thread_ = std::thread([this] { loop(); });
  }
  ~fake_backend() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  std::atomic<int> token_delay_ms{0};
  std::atomic<int> max_active{1 << 20};
  std::atomic<int> retry_after_s{7};

  const std::string& model_name() const override { return name_; }
  int context_length() const override { return ctx_; }
  int vocab_size() const override { return 1000; }

  void hold_encode() {
    std::lock_guard lock(gate_mu_);
    held_ = true;
  }
  void release_encode() {
    {
      std::lock_guard lock(gate_mu_);
      held_ = false;
    }
    gate_cv_.notify_all();
  }
  // Waits until `n` calls of encode are blocked in hold_encode's gate.
  bool wait_encoders(int n, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(gate_mu_);
    return gate_cv_.wait_for(lock, timeout, [&] { return blocked_ >= n; });
  }
  int encodes() const { return encodes_.load(); }

  std::vector<int> encode(std::string_view text) const override {
    ++encodes_;
    {
      std::unique_lock lock(gate_mu_);
      ++blocked_;
      gate_cv_.notify_all();
      gate_cv_.wait(lock, [&] { return !held_; });
      --blocked_;
    }
    std::lock_guard lock(words_mu_);
    std::vector<int> ids;
    std::istringstream in{std::string(text)};
    for (std::string w; in >> w;) {
      auto [it, fresh] = ids_.try_emplace(w, static_cast<int>(words_.size()));
      if (fresh) words_.push_back(w);
      ids.push_back(it->second);
    }
    return ids;
  }
  std::string chat_prompt(const std::vector<serve::chat_message>& messages) const override {
    std::string s;
    for (const auto& m : messages) s += m.role + ": " + m.content + " ";
    return s + "assistant:";
  }
  std::string token_bytes(int id) const override {
    std::string s = "<";  // (not "<" + ...: GCC 12 -O3 warns falsely, -Wrestrict)
    return (s += std::to_string(id)) += ">";
  }
  std::string word(int id) const {
    std::lock_guard lock(words_mu_);
    return id >= 0 && id < static_cast<int>(words_.size()) ? words_[id] : "<unk>";
  }
  // The text choice `index` produces in `tokens` steps (before stop strings).
  std::string expected(const std::vector<int>& prompt, int tokens, int index) const {
    std::string s;
    for (int k = 0; k < tokens; ++k) s += piece(prompt, k, index);
    return s;
  }

  serve::submit_result submit(serve::completion_request req, serve::event_sink sink) override {
    std::lock_guard lock(mu_);
    submitted_.push_back(req);
    if (static_cast<int>(running_.size()) >= max_active.load())
      return {0, 429, retry_after_s.load(), "the queue is full"};
    uint64_t id = ++next_id_;
    running_[id] = {std::move(req), std::move(sink), {}, false};
    running_[id].choices.resize(running_[id].req.n);
    cv_.notify_all();
    return {id, 200, 0, {}};
  }
  void cancel(uint64_t id) override {
    std::lock_guard lock(mu_);
    cancels_.push_back(id);
    if (auto it = running_.find(id); it != running_.end()) it->second.cancelled = true;
    cv_.notify_all();
  }
  std::string metrics_text() const override {
    std::lock_guard lock(mu_);
    return "# TYPE zeroflow_fake_requests_total counter\nzeroflow_fake_requests_total " +
           std::to_string(next_id_) + "\n";
  }

  // ---- observation
  bool wait_cancel(uint64_t id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return std::find(cancels_.begin(), cancels_.end(), id) != cancels_.end();
    });
  }
  bool wait_idle(std::chrono::milliseconds timeout) {  // no request running
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return running_.empty(); });
  }
  std::vector<uint64_t> cancels() const {
    std::lock_guard lock(mu_);
    return cancels_;
  }
  std::vector<serve::completion_request> submitted() const {
    std::lock_guard lock(mu_);
    return submitted_;
  }
  uint64_t last_id() const {
    std::lock_guard lock(mu_);
    return next_id_;
  }
  int running() const {
    std::lock_guard lock(mu_);
    return static_cast<int>(running_.size());
  }

 private:
  struct choice {
    std::string text;  // generated so far
    size_t sent = 0;   // bytes of text already in events
    int tokens = 0;
    bool done = false;
  };
  struct running_request {
    serve::completion_request req;
    serve::event_sink sink;
    std::vector<choice> choices;
    bool cancelled;
  };

  std::string piece(const std::vector<int>& prompt, int k, int index) const {
    std::string w = " ";  // (not " " + word(): GCC 12 -O3 warns falsely, -Wrestrict)
    w += word(prompt[k % prompt.size()]);
    if (index > 0) (w += "/") += std::to_string(index);
    return w;
  }

  // One step of choice c: its next token, then stop/length checks. Returns its event.
  serve::completion_event step(uint64_t id, running_request& r, int index) {
    choice& c = r.choices[index];
    serve::completion_event e;
    e.request_id = id;
    e.index = index;
    if (r.cancelled) {
      e.finish = serve::finish_reason::cancelled;
    } else {
      c.text += piece(r.req.prompt, c.tokens, index);
      e.tokens = {c.tokens % 1000};
      if (const int k = r.req.sampling.logprobs; k >= 0) {
        serve::position_logprobs p{{e.tokens[0], -0.5f}, {}};
        for (int j = 0; j < k; ++j) p.top.push_back({(e.tokens[0] + j) % 1000, -0.5f - j});
        e.logprobs = {p};
      }
      ++c.tokens;
      size_t safe = c.text.size(), stop_at = std::string::npos;
      for (const std::string& s : r.req.stop) {
        stop_at = std::min(stop_at, c.text.find(s));
        for (size_t k = std::min(s.size() - 1, c.text.size()); k > 0; --k)  // held back prefix
          if (c.text.compare(c.text.size() - k, k, s, 0, k) == 0) {
            safe = std::min(safe, c.text.size() - k);
            break;
          }
      }
      if (stop_at != std::string::npos) {
        e.finish = serve::finish_reason::stop;
        safe = stop_at;
      } else if (c.tokens >= r.req.max_tokens) {
        e.finish = serve::finish_reason::length;
        safe = c.text.size();
      }
      e.text = c.text.substr(c.sent, safe - std::min(safe, c.sent));
      c.sent = std::max(c.sent, safe);
    }
    if (e.finish != serve::finish_reason::none) {
      c.done = true;
      e.prompt_tokens = static_cast<int>(r.req.prompt.size());
      e.completion_tokens = c.tokens;
    }
    return e;
  }

  void loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !running_.empty(); });
      if (stop_) return;
      std::vector<std::pair<serve::event_sink, serve::completion_event>> out;
      for (auto it = running_.begin(); it != running_.end();) {
        for (int i = 0; i < it->second.req.n; ++i)
          if (!it->second.choices[i].done)
            out.emplace_back(it->second.sink, step(it->first, it->second, i));
        bool all = std::all_of(it->second.choices.begin(), it->second.choices.end(),
                               [](const choice& c) { return c.done; });
        it = all ? running_.erase(it) : std::next(it);
      }
      lock.unlock();
      for (auto& [sink, e] : out) sink(e);  // outside the lock, like the engine
      out.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(token_delay_ms.load()));
      lock.lock();
      cv_.notify_all();  // wait_idle
    }
  }

  std::string name_ = "fake-model";
  int ctx_;
  mutable std::mutex gate_mu_;
  mutable std::condition_variable gate_cv_;
  bool held_ = false;
  mutable int blocked_ = 0;
  mutable std::atomic<int> encodes_{0};
  mutable std::mutex words_mu_;
  mutable std::vector<std::string> words_;
  mutable std::unordered_map<std::string, int> ids_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_id_ = 0;
  std::map<uint64_t, running_request> running_;
  std::vector<uint64_t> cancels_;
  std::vector<serve::completion_request> submitted_;
  std::thread thread_;
};

}  // namespace zf::testing
