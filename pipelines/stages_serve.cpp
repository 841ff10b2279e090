#include "pipelines/stages_serve.hpp"

#include "pipelines/graph_run.hpp"

namespace zf::stages {

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

void gateway_stage::start(stage_context& ctx) {
  ctx.on(backend, [this, &ctx](const std::shared_ptr<const backend_ref>& b) {
    backend_ = b->backend;
    gw_ = std::make_unique<actors::gateway>(*backend_, o_);
    ctx.emit(listening,
             std::make_shared<const endpoint>(endpoint{o_.host, gw_->port(), backend_->model_name(),
                                                       backend_->context_length()}));
  });
}

void gateway_stage::stop() {
  if (gw_) gw_->stop();
  gw_.reset();  // closes its connections before the backend goes
  backend_.reset();
}

}  // namespace zf::stages
