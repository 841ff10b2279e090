#include "pipelines/stages_serve.hpp"

#include <fmt/format.h>

#include <iostream>
#include <system_error>

#include "pipelines/graph_run.hpp"
#include "runtime/core/error.hpp"

namespace zf::stages {
namespace fs = std::filesystem;
namespace {

// The run folder, made: `want` itself, or with fresh the first of want, want-2, want-3, ... that
// did not exist (create_directory claims it, so two processes never get the same one).
fs::path make_run_dir(const fs::path& want, bool fresh) {
  std::error_code ec;
  if (!fresh) {
    fs::create_directories(want, ec);
    if (ec) fail("cannot create the run folder {}: {}", want.string(), ec.message());
    return want;
  }
  if (want.has_parent_path()) fs::create_directories(want.parent_path(), ec);
  for (int k = 1; k <= 1000 && !ec; ++k) {
    const fs::path p = k == 1 ? want : fs::path(fmt::format("{}-{}", want.string(), k));
    if (fs::create_directory(p, ec)) return p;
  }
  fail("cannot create the run folder {}: {}", want.string(),
       ec ? ec.message() : "it and 999 numbered variants exist");
}

}  // namespace

engine_stage::engine_stage(std::shared_ptr<const lm_weights> w, tokenizer tok, engine_config c)
    : engine_stage(
          [m = served_model{std::move(w), std::move(tok)}]() mutable { return std::move(m); },
          std::move(c)) {}  // called once, at start

void engine_stage::start(stage_context& ctx) {
  served_model m = load_();
  load_ = nullptr;  // the engine holds the weights now (and drops them at the first swap)
  engine_ = actors::make_engine(std::move(m.weights), std::move(m.tok), c_);
  // Swaps are answered on the inbox: update_weights blocks until the engine has swapped
  // between two steps, so `served` follows the swap.
  ctx.on(weights, [this, &ctx](const std::shared_ptr<const weights_update>& u) {
    const uint64_t v = u->version ? u->version : engine_->weights_version() + 1;
    const uint64_t got = engine_->update_weights(v, u->weights);
    ctx.emit(served, std::make_shared<const weights_served>(weights_served{got, u->step}));
  });
  ctx.emit(backend, std::make_shared<const backend_ref>(backend_ref{engine_}));
}

void engine_stage::stop() {
  engine_.reset();
}

gateway_stage::gateway_stage(actors::gateway_options o, record_options r)
    : o_(std::move(o)), r_(std::move(r)) {}

gateway_stage::~gateway_stage() = default;

void gateway_stage::start(stage_context& ctx) {
  ctx.on(backend, [this, &ctx](const std::shared_ptr<const backend_ref>& b) {
    backend_ = b->backend;
    gw_ = std::make_unique<actors::gateway>(*backend_, o_);
    if (o_.console)
      std::cerr << fmt::format("zeroflow: console on http://{}:{}/console/\n", o_.host,
                               gw_->port());
    start_recording();  // once listening: a server that never served leaves no run folder
    ctx.emit(listening,
             std::make_shared<const endpoint>(endpoint{o_.host, gw_->port(), backend_->model_name(),
                                                       backend_->context_length()}));
  });
}

void gateway_stage::stop() {
  if (gw_) gw_->stop();
  stop_recording();  // after the gateway: no request arrives after the last line
  gw_.reset();       // closes its connections before the backend goes
  backend_.reset();
}

void gateway_stage::start_recording() {
  if (r_.run_dir.empty() || !(r_.every_s > 0)) return;
  const fs::path dir = make_run_dir(r_.run_dir, r_.fresh);
  const bool figures = backend_->snapshot().has_value();
  // The engine's steps, coalesced into busy periods, for the console's timeline.
  spans_ = std::make_shared<zf::monitor::span_log>(dir / "spans.jsonl");
  steps_ = std::make_shared<zf::monitor::span_coalescer>(spans_, "engine", "step");
  if (!backend_->observe_steps([c = steps_](auto t0, auto t1) { c->add(t0, t1); })) {
    steps_.reset();
    spans_.reset();
  }
  if (figures)  // each tick also writes the engine's last busy period once it went idle
    recorder_ = std::make_unique<serve::serve_recorder>(
        dir / "metrics.jsonl", r_.every_s, [b = backend_, c = steps_] {
          if (c) c->flush_idle(std::chrono::steady_clock::now());
          return b->snapshot();
        });
  status_ = std::make_unique<zf::monitor::run_status_writer>(dir, "serve", r_.config_toml, 0);
  const std::string what = figures ? fmt::format("metrics.jsonl every {} s", r_.every_s)
                                   : "run.json only: this backend gives no figures";
  std::cerr << fmt::format("zeroflow: recording the server in {} ({})\n", dir.string(), what);
}

void gateway_stage::stop_recording() {
  if (recorder_) recorder_->stop();
  recorder_.reset();
  if (steps_) {
    backend_->observe_steps(nullptr);  // no step after this reaches the coalescer
    steps_->flush();
    steps_.reset();
    spans_->flush();  // a step still in flight keeps the log alive through its observer
    spans_.reset();
  }
  if (!status_) return;
  if (std::string why = backend_ ? backend_->failure() : ""; !why.empty())
    status_->finish(zf::monitor::run_state::failed, why);
  else if (r_.stop && !r_.stop->load())
    status_->finish(zf::monitor::run_state::failed,
                    "the serving graph stopped without a stop request: a stage failed (see the "
                    "server's log)");
  else
    status_->finish(zf::monitor::run_state::finished);
  status_.reset();
}

}  // namespace zf::stages
