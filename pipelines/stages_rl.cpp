#include "pipelines/stages_rl.hpp"

#include <fmt/format.h>

#include <chrono>
#include <iostream>

#include "actors/engine.hpp"
#include "pipelines/graph_run.hpp"
#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"

namespace zf::stages {
namespace {

// Runs f on the stage's thread, turning an exception into the run's failure named `role`.
template <class F>
std::thread role_thread(stage_context& ctx, const char* role, F f) {
  return std::thread([&ctx, role, f = std::move(f)]() mutable {
    try {
      f();
    } catch (const std::exception& e) {
      ctx.fail_run(fmt::format("{}: {}", role, e.what()));
    }
  });
}

std::string gap_text(const nlohmann::json& j) {
  return j["logprob_gap_max"].is_null() ? "n/a"
                                        : fmt::format("{:.2g}", j["logprob_gap_max"].get<double>());
}

}  // namespace

void print_rl_step(const nlohmann::json& j, int steps) {
  auto num = [&](const char* k) { return j[k].get<double>(); };
  std::cerr << fmt::format(
      "step {:>4}/{} reward {:.3f}±{:.3f} kl {:.4f} ent {:.3f} clip {:.3f} len {:.1f} gap {} "
      "lag {} | gen {:.2f}s train {:.2f}s sync {:.3f}s idle trainer {:.0f}% engine {:.0f}%\n",
      j["step"].get<int>(), steps, num("reward_mean"), num("reward_std"), num("kl"), num("entropy"),
      num("clip_frac"), num("response_len"), gap_text(j), j["version_lag"].get<int>(),
      num("time_gen_s"), num("time_train_s"), num("time_sync_s"), 100 * num("idle_frac_trainer"),
      100 * num("idle_frac_engine"));
}

engine_factory local_engine(tokenizer tok, engine_config engine) {
  return [tok = std::move(tok), engine = std::move(engine)](std::shared_ptr<const lm_weights> w) {
    return actors::make_engine(std::move(w), tok, engine);
  };
}

namespace {
struct fixed_roles_source final : rl_roles_source {
  rl::rl_core& c;
  std::shared_ptr<const lm_weights> w;
  engine_factory e;
  fixed_roles_source(rl::rl_core& core, std::shared_ptr<const lm_weights> first,
                     engine_factory make)
      : c(core), w(std::move(first)), e(std::move(make)) {}
  rl::rl_core& core() override { return c; }
  std::shared_ptr<const lm_weights> first() override { return w; }
  engine_factory engine() override { return e; }
};
}  // namespace

std::shared_ptr<rl_roles_source> fixed_roles(rl::rl_core& core,
                                             std::shared_ptr<const lm_weights> first,
                                             engine_factory engine) {
  return std::make_shared<fixed_roles_source>(core, std::move(first), std::move(engine));
}

void rollout_stage::start(stage_context& ctx) {
  core_ = &roles_->core();
  first_ = roles_->first();
  make_ = roles_->engine();
  engine_ = make_(first_);
  const rl::rl_core_options& o = core_->options();
  restarts_left_ = o.rl.engine_restarts;
  worker_ = std::make_unique<rl::rollout_worker>(
      *engine_, [this](int s) { return core_->prompt_ids(s); },
      rl::rollout_options_of(o.rl, o.seed), o.rl.steps, o.rl.overlap, nullptr, o.start_step,
      [this](uint64_t v, std::shared_ptr<const lm_weights> w, const std::string& why) {
        return restart(v, std::move(w), why);
      });
  if (monitor::span_log* log = roles_->spans())
    worker_->on_span(
        [log](const char* what, auto t0, auto t1) { log->add("rollout", what, t0, t1); });
  for (auto& [v, w] : core_->initial_versions()) worker_->publish(v, w);
  ctx.on(weights, [this](const std::shared_ptr<const policy_weights>& w) {
    if (!w->final) {
      worker_->publish(w->version, w->weights);
      return;
    }
    {
      std::lock_guard lk(mu_);
      final_ = w;
    }
    cv_.notify_all();
    worker_->request_stop();  // no more rollouts: the policy is done
  });
  th_ = role_thread(ctx, "rollout engine", [this, &ctx] { run(ctx); });
}

// On the worker's thread: the engine is gone; a new one on the same weights, labelled with the
// version the batch needs (rlhf.engine_restarts of them in a run).
serve::completion_backend* rollout_stage::restart(uint64_t version,
                                                  std::shared_ptr<const lm_weights> w,
                                                  const std::string& why) {
  if (restarts_left_ <= 0) return nullptr;
  const int n = core_->options().rl.engine_restarts - --restarts_left_;
  std::cerr << fmt::format("{}; restarting the rollout engine on version {} (restart {} of {})\n",
                           why, version, n, core_->options().rl.engine_restarts);
  // The dead one is closed when the stage stops: closing it at once (its actor system) can wait
  // on CAF's middleman, still busy with the lost connection.
  dead_.push_back(std::move(engine_));
  engine_ = make_(w ? w : first_);
  if (version > 0) engine_->update_weights(version, w);  // w is that version's
  return engine_.get();
}

void rollout_stage::run(stage_context& ctx) {
  const auto [r0, s0] = core_->evaluate(*engine_);
  ctx.emit(evals, std::make_shared<const rl_eval>(rl_eval{false, r0, s0}));
  worker_->start();
  const rl::rl_core_options& o = core_->options();
  for (int s = o.start_step; s < o.rl.steps; ++s) {
    rl::rollout_batch b;
    try {
      b = worker_->take(s);
    } catch (const std::exception&) {
      std::lock_guard lk(mu_);
      if (final_) break;  // stopped on purpose: the policy ended early
      throw;
    }
    ctx.emit(rollouts, std::make_shared<const rl::rollout_batch>(std::move(b)));
  }
  std::shared_ptr<const policy_weights> last;
  {
    std::unique_lock lk(mu_);
    while (!final_ && !ctx.stopping()) cv_.wait_for(lk, std::chrono::milliseconds(100));
    last = final_;
  }
  worker_->stop();
  if (!last) return;  // the run is stopping without us
  // The worker may have swapped this version in already, for a batch run ahead (and may have
  // replaced the engine).
  serve::completion_backend* engine = engine_.get();
  if (engine->weights_version() < last->version)
    engine->update_weights(last->version, last->weights);
  const auto [r1, s1] = core_->evaluate(*engine);
  ctx.emit(evals, std::make_shared<const rl_eval>(rl_eval{true, r1, s1}));
  ctx.done();
}

void rollout_stage::stop() {
  if (worker_) worker_->request_stop();
  cv_.notify_all();
  if (th_.joinable()) th_.join();
  if (worker_) worker_->stop();
  worker_.reset();
  engine_.reset();
  dead_.clear();
}

void batch_role_stage::start_role(stage_context& ctx, in_port<rl::rollout_batch> port) {
  core_ = &roles_->core();
  ctx.on(port, [this](const std::shared_ptr<const rl::rollout_batch>& b) { queue_.push(b); });
  th_ = role_thread(ctx, role_, [this, &ctx] {
    work(ctx);
    ctx.done();
  });
}

void batch_role_stage::stop() {
  queue_.close();
  if (th_.joinable()) th_.join();
}

void score_stage::work(stage_context& ctx) {
  while (auto b = queue_.pop()) {
    const auto t0 = clock_type::now();
    auto scored = std::make_shared<rl::rollout_batch>(*b);
    core_->score(*scored);
    if (monitor::span_log* log = roles_->spans()) log->add("score", "score", t0, clock_type::now());
    ctx.emit(out, std::shared_ptr<const rl::rollout_batch>(std::move(scored)));
  }
}

void policy_stage::work(stage_context& ctx) {
  for (;;) {
    const auto t0 = clock_type::now();
    const auto b = queue_.pop();
    if (!b) return;  // no more rollouts (the run is stopping)
    const auto t1 = clock_type::now();
    rl::rl_step st = core_->update(*b, seconds_since(t0));
    if (monitor::span_log* log = roles_->spans())
      log->add("policy", "update", t1, clock_type::now());
    ctx.emit(metrics, std::make_shared<const rl_metrics>(rl_metrics{std::move(st.metrics)}));
    if (st.publish || st.last)
      ctx.emit(weights, std::make_shared<const policy_weights>(
                            policy_weights{st.version, st.weights, st.last}));
    if (st.last) return;
  }
}

void rl_monitor_stage::start(stage_context& ctx) {
  out_.open(file_, std::ios::app);
  if (!out_) fail("cannot write {}", file_);
  ctx.on(metrics, [this](const std::shared_ptr<const rl_metrics>& m) {
    out_ << m->j.dump() << "\n" << std::flush;
    result_.metrics.push_back(m->j);
    ++result_.lag_histogram[m->j["version_lag"].get<int>()];
    result_.steps = m->j["step"].get<int>();
    if (!quiet_) print_rl_step(m->j, steps_);
    if (on_metrics_) on_metrics_(m->j);
  });
  ctx.on(evals, [this](const std::shared_ptr<const rl_eval>& e) {
    (e->after ? result_.eval_after : result_.eval_before) = e->reward;
    (e->after ? result_.solved_after : result_.solved_before) = e->solved;
  });
}

void rl_monitor_stage::inputs_closed(stage_context& ctx) {
  out_.close();
  if (on_closed_) on_closed_();
  ctx.done();
}

}  // namespace zf::stages
