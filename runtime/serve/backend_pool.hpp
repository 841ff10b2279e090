#pragma once
// Several serving engines as one completion_backend: an RLHF run's rollout engines
// (rlhf.engines), each in the trainer's process or in one of its own. Requests go round-robin
// (each whole, with its n choices, to one engine); a weight update goes to every engine at once
// and is done when all have swapped. With batch-invariant engines a request's tokens and
// log-probs depend on its seed and weights version only, so a run gives the same bits with any
// number of engines.
#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::serve {

class backend_pool final : public completion_backend {
 public:
  // At least one; all serve the same model (the first one's name, context and tokenizer answer).
  explicit backend_pool(std::vector<std::unique_ptr<completion_backend>> engines);

  const std::string& model_name() const override { return e_[0]->model_name(); }
  int context_length() const override { return e_[0]->context_length(); }
  int vocab_size() const override { return e_[0]->vocab_size(); }
  std::vector<int> encode(std::string_view text) const override { return e_[0]->encode(text); }
  std::string chat_prompt(const std::vector<chat_message>& m) const override {
    return e_[0]->chat_prompt(m);
  }
  std::string token_bytes(int id) const override { return e_[0]->token_bytes(id); }
  // Ids are the pool's own (engine ids may collide across engines).
  submit_result submit(completion_request req, event_sink sink) override;
  void cancel(uint64_t id) override;
  // Every engine's text, one after the other.
  std::string metrics_text() const override;
  // The engines' snapshots merged (serve_sample.hpp: merge); those that give none are left out,
  // nullopt when none gives one.
  std::optional<engine_snapshot> snapshot() const override;
  // Every engine's steps to f (one row on the timeline); true when any engine can.
  bool observe_steps(step_observer f) override;
  // The oldest version any engine serves.
  uint64_t weights_version() const override;
  // To every engine; `done` once all answered: 200 when all swapped, else the first refusal.
  void update_weights_async(std::shared_ptr<const lm_weights> weights,
                            std::optional<uint64_t> version, weights_done done) override;
  // The first engine's failure, if any is gone.
  std::string failure() const override;
  std::size_t size() const { return e_.size(); }

 private:
  std::vector<std::unique_ptr<completion_backend>> e_;
  std::atomic<uint64_t> next_{0};
  std::mutex mu_;
  struct route {
    std::size_t engine;
    uint64_t id;
    int open;  // choices not finished
  };
  std::unordered_map<uint64_t, route> routes_;  // pool id -> engine and its id (for cancel)
};

}  // namespace zf::serve
