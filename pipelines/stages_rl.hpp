#pragma once
// RLHF as graph stages (pipelines/graph.hpp), one per role, each a thin shell over runtime/rl's
// rl_core on a thread of its own; `zeroflow grpo | rloo | ppo` runs this graph (examples/graphs/
// rlhf.toml, types registered by pipelines/rl_session) and examples/rlhf_grpo.cpp composes it in
// C++:
//
//   rollout --rollouts--> score --rollouts--> policy --metrics--> monitor
//      ^                                         |
//      +----------- weights (versioned) ---------+         (and rollout --evals--> monitor)
//
//   rollout (the rollout engine's role): owns a serving engine (actors/engine, batch-invariant);
//            in weights (policy_weights); generates batch s with version max(0, s - overlap)
//            (the worker of runtime/rl/rollout swaps versions in between batches), evaluates
//            greedily before the first and after the final version; out rollouts, out evals
//   score    (the frozen roles: reference, reward model, rule): in rollouts -> out rollouts scored
//   policy   (the policy and PPO's critic): in rollouts -> one update each; out weights (every
//            version a later batch needs, then the final one), out metrics
//   rl_monitor: in metrics, in evals -> metrics.jsonl, the progress line and the run's result
// The weights connection closes the cycle with a credit bound; the rollouts in flight are bounded
// by the versions (batch s waits for version s - overlap), so at most overlap + 1 wait.
#include <condition_variable>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "pipelines/graph.hpp"
#include "pipelines/stages_serve.hpp"
#include "runtime/monitor/span_log.hpp"
#include "runtime/rl/rl_core.hpp"
#include "runtime/rl/rollout.hpp"

namespace zf {
struct policy_weights {  // the policy's weights of one version, for the rollout engine
  uint64_t version = 0;
  std::shared_ptr<const lm_weights> weights;
  bool final = false;  // the last version of the run: evaluate on it, make no more rollouts
};
struct rl_metrics {  // one update's figures (a metrics.jsonl line)
  nlohmann::json j;
};
struct rl_eval {       // greedy evaluation on the held-out prompts
  bool after = false;  // false: before the first update
  double reward = 0, solved = 0;
};
}  // namespace zf

ZF_MESSAGE_NAME(zf::rl::rollout_batch, "rollouts");
ZF_MESSAGE_NAME(zf::policy_weights, "policy_weights");
ZF_MESSAGE_NAME(zf::rl_metrics, "rl_metrics");
ZF_MESSAGE_NAME(zf::rl_eval, "rl_eval");

namespace zf::stages {

// A queue from a stage's inbox to its thread (its length is bounded by the run's versions).
template <class T>
class handoff {
 public:
  void push(std::shared_ptr<const T> m) {
    {
      std::lock_guard lk(mu_);
      q_.push_back(std::move(m));
    }
    cv_.notify_all();
  }
  void close() {
    {
      std::lock_guard lk(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }
  // The next message, or null once closed and drained.
  std::shared_ptr<const T> pop() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return nullptr;
    auto m = std::move(q_.front());
    q_.pop_front();
    return m;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<const T>> q_;
  bool closed_ = false;
};

// Makes the engine serving `first` as version 0 (in this process, or others: pipelines/
// rl_session), on the rollout stage's start.
using engine_factory =
    std::function<std::unique_ptr<serve::completion_backend>(std::shared_ptr<const lm_weights>)>;
// An engine in this process (actors/make_engine) with this configuration (batch_invariant for
// exact log-probs).
engine_factory local_engine(tokenizer tok, engine_config engine);

// Where the role stages find the run: its roles' logic (rl_core), the weights the engine serves
// first (what version max(0, start - overlap) needs) and how to make the engine. Asked when a
// stage starts, not when it is built, so a graph file's RL stages can be built and checked
// (`zeroflow graph check`) without a model; each is asked from one thread at a time.
struct rl_roles_source {
  virtual ~rl_roles_source() = default;
  virtual rl::rl_core& core() = 0;
  virtual std::shared_ptr<const lm_weights> first() = 0;
  virtual engine_factory engine() = 0;
  // Where the roles' busy spans go (the run's spans.jsonl); null: nowhere.
  virtual monitor::span_log* spans() { return nullptr; }
};
// A source over roles that exist already (the C++ DSL: examples/rlhf_grpo.cpp).
std::shared_ptr<rl_roles_source> fixed_roles(rl::rl_core& core,
                                             std::shared_ptr<const lm_weights> first,
                                             engine_factory engine);

class rollout_stage : public stage {
 public:
  in_port<policy_weights> weights = input<policy_weights>("weights");
  out_port<rl::rollout_batch> rollouts = output<rl::rollout_batch>("rollouts");
  out_port<rl_eval> evals = output<rl_eval>("evals");

  explicit rollout_stage(std::shared_ptr<rl_roles_source> roles) : roles_(std::move(roles)) {}
  ~rollout_stage() override { stop(); }
  void start(stage_context& ctx) override;
  void stop() override;
  void inputs_closed(stage_context&) override {}  // done after the final evaluation

 private:
  void run(stage_context& ctx);
  serve::completion_backend* restart(uint64_t version, std::shared_ptr<const lm_weights> w,
                                     const std::string& why);
  std::shared_ptr<rl_roles_source> roles_;
  rl::rl_core* core_ = nullptr;  // roles_'s, from start()
  std::shared_ptr<const lm_weights> first_;
  engine_factory make_;
  int restarts_left_ = 0;
  std::vector<std::unique_ptr<serve::completion_backend>> dead_;  // engines replaced
  std::unique_ptr<serve::completion_backend> engine_;
  std::unique_ptr<rl::rollout_worker> worker_;
  std::thread th_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const policy_weights> final_;
};

// A role that takes rollout batches in order on a thread of its own: the inbox hands each batch
// to the thread (compute never runs on CAF's threads), which runs work() until the inputs close.
class batch_role_stage : public stage {
 public:
  ~batch_role_stage() override { stop(); }
  void inputs_closed(stage_context&) override { queue_.close(); }
  void stop() override;

 protected:
  batch_role_stage(std::shared_ptr<rl_roles_source> roles, const char* role)
      : roles_(std::move(roles)), role_(role) {}
  // Registers `port`'s handler and starts the thread running work(ctx).
  void start_role(stage_context& ctx, in_port<rl::rollout_batch> port);
  virtual void work(stage_context& ctx) = 0;
  std::shared_ptr<rl_roles_source> roles_;
  rl::rl_core* core_ = nullptr;  // roles_'s, from start_role()
  handoff<rl::rollout_batch> queue_;

 private:
  const char* role_;
  std::thread th_;
};

class score_stage : public batch_role_stage {
 public:
  in_port<rl::rollout_batch> in = input<rl::rollout_batch>("in");
  out_port<rl::rollout_batch> out = output<rl::rollout_batch>("out");

  explicit score_stage(std::shared_ptr<rl_roles_source> roles)
      : batch_role_stage(std::move(roles), "reference and reward") {}
  void start(stage_context& ctx) override { start_role(ctx, in); }

 private:
  void work(stage_context& ctx) override;
};

class policy_stage : public batch_role_stage {
 public:
  in_port<rl::rollout_batch> rollouts = input<rl::rollout_batch>("rollouts");
  out_port<policy_weights> weights = output<policy_weights>("weights");
  out_port<rl_metrics> metrics = output<rl_metrics>("metrics");

  explicit policy_stage(std::shared_ptr<rl_roles_source> roles)
      : batch_role_stage(std::move(roles), "policy") {}
  void start(stage_context& ctx) override { start_role(ctx, rollouts); }

 private:
  void work(stage_context& ctx) override;
};

// Writes metrics.jsonl (appending), prints the progress line unless quiet, and fills `result`
// (read once the graph has run).
class rl_monitor_stage : public stage {
 public:
  in_port<rl_metrics> metrics = input<rl_metrics>("metrics");
  in_port<rl_eval> evals = input<rl_eval>("evals", false);

  // on_closed: after the last metrics line (a run's summary).
  rl_monitor_stage(std::string metrics_file, int steps, bool quiet, rl::rl_result& result,
                   std::function<void(const nlohmann::json&)> on_metrics = nullptr,
                   std::function<void()> on_closed = nullptr)
      : file_(std::move(metrics_file)),
        steps_(steps),
        quiet_(quiet),
        result_(result),
        on_metrics_(std::move(on_metrics)),
        on_closed_(std::move(on_closed)) {}
  void start(stage_context& ctx) override;
  void inputs_closed(stage_context& ctx) override;

 private:
  std::string file_;
  std::ofstream out_;
  int steps_;
  bool quiet_;
  rl::rl_result& result_;
  std::function<void(const nlohmann::json&)> on_metrics_;
  std::function<void()> on_closed_;
};

// The progress line of one update (metrics.jsonl's keys) to stderr.
void print_rl_step(const nlohmann::json& j, int steps);

}  // namespace zf::stages
