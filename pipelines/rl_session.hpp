#pragma once
// One RL run (`zeroflow grpo | rloo | ppo`, or the RL stages of any graph file): the roles'
// models (policy, possibly on ZeRO ranks; reference; reward model; PPO's critic), the rl_core
// over them, the rollout engine's first weights and where it runs, and the run folder's files
// (metrics.jsonl, summary.json, checkpoints/, roles/).
//
// The RL stage types of a graph file (add_rl_stage_types: rollout, score, policy, rl_monitor)
// share one session. It does its work (set-up, SFT warm-up, resume, the up-front context and
// memory checks) once, when prepare() is called or the first stage starts, so that
// `zeroflow graph check` builds an RL graph without reading a model.
#include <functional>
#include <memory>
#include <mutex>

#include "pipelines/graph_toml.hpp"
#include "pipelines/rl_run.hpp"
#include "pipelines/stages_rl.hpp"

namespace zf {

class rl_session final : public stages::rl_roles_source {
 public:
  rl_session(run_config cfg, rl_run_options o);
  ~rl_session() override;
  // Once (later calls return at once; a failure is rethrown to each). zf::error naming what is
  // wrong: the run folder, the resume point, data files, context or memory.
  void prepare();
  rl::rl_core& core() override;
  std::shared_ptr<const lm_weights> first() override;
  stages::engine_factory engine() override;
  monitor::span_log* spans() override;  // the run folder's spans.jsonl

  // For the monitor stage: the run's figures land here, metrics.jsonl is its file.
  rl::rl_result& result();
  std::string metrics_file() const;
  int steps();  // rlhf.steps of the run (a resumed run's own)
  const rl_run_options& options() const { return o_; }
  // Once the graph ran (the monitor stage calls it when its inputs close; again returns the
  // same): summary.json and the closing line; the run's outcome.
  rl_run_result finish();
  // The run failed (the graph's error): run.json says so, with `why`, even after finish(). A
  // session that is never finished says failed, "ended without a result".
  void record_failure(const std::string& why);

 private:
  struct state;
  run_config cfg_;
  rl_run_options o_;
  std::once_flag once_;
  std::unique_ptr<state> st_;
};

// The RL stage types, each on the session `session(cfg)` returns for a stage's configuration
// (the first RL stage's makes it):
//   rollout    the rollout engine(s): in weights; out rollouts, evals
//   score      reference log-probs and rewards: in -> out rollouts
//   policy     the update (GRPO, RLOO, PPO by rlhf.algorithm): in rollouts; out weights, metrics
//   rl_monitor metrics.jsonl and the progress line: in metrics, evals (optional)
void add_rl_stage_types(stage_registry& reg,
                        std::function<std::shared_ptr<rl_session>(const run_config&)> session);

// examples/graphs/rlhf.toml as built in (`zeroflow grpo | rloo | ppo` without --graph).
const std::string& default_rl_graph();

}  // namespace zf
