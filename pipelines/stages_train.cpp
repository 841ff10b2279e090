#include "pipelines/stages_train.hpp"

#include "pipelines/graph_run.hpp"

namespace zf::stages {
namespace {

// The run's observer when the metrics port is connected: every figure and note becomes a
// message (emitted from the pipeline's monitor thread, in step order).
class emitting_observer : public train_observer {
 public:
  emitting_observer(stage_context& ctx, const train_stage& s) : ctx_(ctx), s_(s) {}
  void metrics(const step_metrics& m) override {
    ctx_.emit(s_.metrics, std::make_shared<const step_metrics>(m));
  }
  void note(const std::string& text) override {
    ctx_.emit(s_.notes, std::make_shared<const train_note>(train_note{text}));
  }

 private:
  stage_context& ctx_;
  const train_stage& s_;
};

}  // namespace

void train_stage::start(stage_context& ctx) {
  o_.on_weights = [this, &ctx](int step, std::shared_ptr<const lm_weights> w) {
    ctx.emit(weights,
             std::make_shared<const weights_update>(weights_update{0, std::move(w), step}));
  };
  if (ctx.connected(metrics)) o_.observer = std::make_shared<emitting_observer>(ctx, *this);
  th_ = std::thread([this, &ctx] {
    try {
      auto r = pretrain(cfg_).run(o_);
      ctx.emit(result, std::make_shared<const train_result>(std::move(r)));
      ctx.done();
    } catch (const std::exception& e) {
      ctx.fail_run(e.what());
    }
  });
}

void train_stage::stop() {
  *o_.stop = true;
  if (th_.joinable()) th_.join();
}

void monitor_stage::start(stage_context& ctx) {
  ctx.on(metrics, [this](const std::shared_ptr<const step_metrics>& m) {
    if (!quiet_) printer_.metrics(*m);
  });
  ctx.on(notes, [this](const std::shared_ptr<const train_note>& n) { printer_.note(n->text); });
}

void monitor_stage::inputs_closed(stage_context& ctx) {
  printer_.flush();
  ctx.done();
}

}  // namespace zf::stages
