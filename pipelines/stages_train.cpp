#include "pipelines/stages_train.hpp"

#include "pipelines/graph_run.hpp"

namespace zf::stages {

void train_stage::start(stage_context& ctx) {
  o_.stop = &stop_;
  o_.on_weights = [this, &ctx](int step, std::shared_ptr<const lm_weights> w) {
    ctx.emit(weights,
             std::make_shared<const weights_update>(weights_update{0, std::move(w), step}));
  };
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
  stop_ = true;
  if (th_.joinable()) th_.join();
}

}  // namespace zf::stages
