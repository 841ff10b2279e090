#include "runtime/train/train_loop.hpp"

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "runtime/core/error.hpp"
#include "runtime/train/optim.hpp"

namespace zf {

using clock_type = std::chrono::steady_clock;

train_loop::train_loop(train_loop_options o, rank_group& ranks, batch_source& data,
                       train_sink& sink)
    : o_(std::move(o)),
      ranks_(ranks),
      data_(data),
      sink_(sink),
      local_(ranks.size()),
      scaler_(o_.train.fp16, o_.train.precision == "fp16") {
  if (local_ < 1) fail("train loop: no ranks");
  if (o_.start_scaler && scaler_.enabled()) scaler_.restore(*o_.start_scaler);
}

train_loop_options loop_options_of(const run_config& c) {
  train_loop_options o;
  o.train = c.train;
  o.optimizer = c.optimizer;
  o.schedule = c.schedule;
  o.checkpoint = c.checkpoint;
  o.eval = c.eval;
  o.zero_stage = c.zero.stage;
  o.moe = c.model.moe.num_experts > 0;
  return o;
}

// Where the run ends: train.steps, or the step whose end first reaches train.tokens.
int train_loop::end_step(int ranks) const {
  const auto& t = o_.train;
  if (t.tokens <= 0) return t.steps;
  int64_t sum = 0;
  for (int s = 0; s < t.steps; ++s) {
    sum += o_.data_plan ? o_.data_plan->step_tokens(s)
                        : int64_t(t.batch_size) * t.seq_len * t.grad_accum * ranks;
    if (sum >= t.tokens) return s + 1;
  }
  return t.steps;
}

train_result train_loop::run() {
  const auto& t = o_.train;
  const int ranks = local_ * o_.process_world;  // global ranks
  r_ = {};
  r_.first_step = r_.final_step = o_.start_step;
  requested_ = taken_ = int64_t(o_.start_step) * t.grad_accum * local_;
  end_step_ = end_step(ranks);
  const int64_t full_step = int64_t(t.batch_size) * t.seq_len * t.grad_accum * ranks;
  tokens_ = o_.start_tokens >= 0 ? o_.start_tokens
            : o_.data_plan       ? o_.data_plan->tokens_before(o_.start_step)
                                 : int64_t(o_.start_step) * full_step;
  layer_tokens_ = o_.start_layer_tokens >= 0 ? o_.start_layer_tokens
                  : o_.data_plan             ? o_.data_plan->layer_tokens_before(o_.start_step)
                                             : 0;
  uint64_t last_comm = o_.comm_bytes ? o_.comm_bytes() : 0;
  const auto t0 = clock_type::now();
  try {
    for (int step = o_.start_step; step < end_step_; ++step) {
      const auto ts = clock_type::now();
      const double loss = train_step(step);
      const double step_ms =
          std::chrono::duration<double, std::milli>(clock_type::now() - ts).count();
      poll_writer();
      const int64_t step_tokens = o_.data_plan ? o_.data_plan->step_tokens(step) : full_step;
      tokens_ += step_tokens;
      if (o_.data_plan) layer_tokens_ += o_.data_plan->step_layer_tokens(step);
      r_.losses.push_back(static_cast<float>(loss));
      r_.final_step = step + 1;
      step_metrics m = step_figures(step, loss, step_ms, step_tokens, ranks);
      m.elapsed_s = std::chrono::duration<double>(clock_type::now() - t0).count();
      if (o_.comm_bytes) {
        const uint64_t now = o_.comm_bytes();
        m.comm_bytes = double(now - last_comm);
        last_comm = now;
      }
      const bool last = step + 1 == end_step_;
      const bool stopping =
          (o_.stop && o_.stop->load()) || (o_.stop_at_step > 0 && step + 1 >= o_.stop_at_step);
      if (o_.eval.every > 0 && ((step + 1) % o_.eval.every == 0 || last)) {
        m.val_loss = evaluate();
        r_.val_losses.emplace_back(step + 1, static_cast<float>(m.val_loss));
      }
      sink_.metrics(m);
      if (o_.after_step) o_.after_step(step + 1);
      if (checkpoint_due(step + 1, last, stopping)) checkpoint(step + 1);
      if (stopping && !last) {
        r_.interrupted = true;
        sink_.note("interrupted: stopped after step " + std::to_string(step + 1));
        break;
      }
    }
    wait_for_writer();
  } catch (const std::exception& e) {
    r_.error = e.what();
  }
  sink_.flush();
  return std::move(r_);
}

// One step's figures but the elapsed time, the communication and the validation loss.
step_metrics train_loop::step_figures(int step, double loss, double step_ms, int64_t step_tokens,
                                      int ranks) {
  step_metrics m;
  m.step = step + 1;
  m.total_steps = end_step_;
  m.loss = loss;
  m.lr = lr_;
  m.grad_norm = grad_norm_;
  if (scaler_.enabled()) {
    m.loss_scale = scaler_.scale();
    m.skipped_steps = scaler_.skipped();
    m.skipped = skipped_;
  }
  m.step_ms = step_ms;
  m.tokens_per_s = step_tokens / (step_ms / 1000.0);
  m.tokens = tokens_;
  m.param_bytes = o_.memory.param_bytes;
  m.grad_bytes = o_.memory.grad_bytes;
  m.optim_bytes = o_.memory.optim_bytes;
  m.ranks = ranks;
  m.data_wait_ms = data_wait_ms_;
  m.ckpt_write_ms = std::exchange(ckpt_write_ms_, -1.0);
  if (o_.moe) set_moe_figures(ranks_.moe_stats(), m);
  if (o_.data_plan) {
    const data_schedule& d = *o_.data_plan;
    const step_plan p = d.at(step);
    m.layer_tokens = layer_tokens_;
    m.seqlen = p.seqlen;
    m.pool_difficulty = p.pool_difficulty;
    m.pool_metric = d.pool_metric();
    m.pool_percentile = d.pool_percentile();
    m.ltd_keep = p.ltd_keep;
    m.ltd_t = p.t;
    m.ltd_layers = static_cast<int>(d.ltd_layers().size());
  }
  return m;
}

bool train_loop::checkpoint_due(int done, bool last, bool stopping) const {
  const int every = o_.checkpoint.every;
  return o_.checkpoints && (last || stopping || (every > 0 && done % every == 0));
}

// Batch q = micro * local + r goes to local rank r; the source holds at most train.prefetch
// requests per local rank beyond the one being taken (the credit).
batch_ptr train_loop::next_batch() {
  const int64_t credit = int64_t(o_.train.prefetch) * local_;
  auto request = [&] {
    const int64_t q = requested_++;
    data_.request_train(q / local_, static_cast<int>(o_.process_rank * local_ + q % local_));
  };
  while (requested_ - taken_ < credit) request();
  ++taken_;
  const auto t0 = clock_type::now();
  auto b = data_.take_train();
  data_wait_ms_ += std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
  request();  // keep the window full while the ranks compute
  return b;
}

double train_loop::train_step(int step) {
  const auto& t = o_.train;
  data_wait_ms_ = 0;
  ranks_.zero_grad();
  // every rank of the group (all processes) contributes 1/(accum * ranks) of the mean; fp16
  // scales the loss so small gradients survive the f16 GEMM operands
  const double loss_scale = scaler_.scale();
  const float scale = static_cast<float>(
      loss_scale / (t.grad_accum * static_cast<double>(local_ * o_.process_world)));
  double loss = 0;
  std::vector<batch_ptr> batches(local_);
  for (int micro = 0; micro < t.grad_accum; ++micro) {
    for (auto& b : batches) b = next_batch();
    for (float l : ranks_.forward_backward(batches, scale)) loss += l;
  }
  loss /= t.grad_accum * static_cast<double>(local_);
  ranks_.reduce_gradients();
  double sq = 0;
  for (double x : ranks_.grad_sq_norms()) sq += x;
  if (o_.process_world > 1) {  // every process holds a share: sum over the group
    loss = ranks_.all_sum(loss) / o_.process_world;
    sq = ranks_.all_sum(sq);
  }
  grad_norm_ = std::sqrt(sq) / loss_scale;
  lr_ = o_.data_plan ? o_.data_plan->lr_at(step, tokens_, layer_tokens_)
                     : lr_at(o_.optimizer, o_.schedule, t.steps, step);
  // fp16: an overflow (every process sees the same summed norm) skips the step on all ranks
  skipped_ = scaler_.update(!std::isfinite(grad_norm_) || !std::isfinite(loss));
  if (skipped_) return loss;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm_))
    fail("step {}: loss or gradient is not finite (loss {}); lower optimizer.lr?", step + 1, loss);
  // clipping and unscaling in one factor on the gradients
  const float coef =
      static_cast<float>(clip_coefficient(grad_norm_, o_.optimizer.grad_clip) / loss_scale);
  ranks_.step(lr_, step + 1, coef);
  return loss;
}

// Data-parallel evaluation: global rank g takes validation batch i * ranks + g, so N ranks with
// batch b see the windows one rank with batch N*b sees.
double train_loop::evaluate() {
  const int n = local_, pw = o_.process_world;
  double sum = 0;
  std::vector<batch_ptr> bs(n);
  for (int i = 0; i < o_.eval.batches; ++i) {
    for (int r = 0; r < n; ++r) bs[r] = data_.valid(int64_t(i) * n * pw + o_.process_rank * n + r);
    for (float l : ranks_.evaluate(bs)) sum += l;
  }
  if (pw > 1) sum = ranks_.all_sum(sum) / pw;
  return sum / (double(o_.eval.batches) * n);
}

void train_loop::wait_for_writer() {
  if (!writing_) return;
  writing_ = false;
  r_.last_checkpoint = sink_.wait_checkpoint();
  // reported with the next step's metrics (none after the last step: its span still shows it)
  if (const double ms = sink_.checkpoint_write_ms(); ms >= 0) ckpt_write_ms_ = ms;
}

// A write that finished while the ranks computed: waiting for it now costs nothing, and its
// duration goes into this step's metrics. Not while an earlier write's duration is still to be
// reported (the wait in checkpoint() took it): that one goes first, this one a step later, else
// the earlier figure was overwritten and lost (seen under load: two writes in one step).
void train_loop::poll_writer() {
  if (writing_ && ckpt_write_ms_ < 0 && sink_.checkpoint_write_ms() >= 0) wait_for_writer();
}

void train_loop::checkpoint(int step) {
  wait_for_writer();  // one write in flight: the credit that bounds snapshot memory
  auto req = std::make_shared<checkpoint_request>();
  req->step = step;
  req->world = local_ * o_.process_world;
  req->zero_stage = o_.zero_stage;
  req->state = {{"step", step},        {"seed", o_.train.seed},
                {"world", req->world}, {"zero_stage", o_.zero_stage},
                {"tokens", tokens_},   {"layer_tokens", layer_tokens_}};
  if (scaler_.enabled()) {
    const loss_scaler_state& ls = scaler_.state();
    req->state["loss_scaler"] = {{"scale", ls.scale},
                                 {"hysteresis", ls.hysteresis},
                                 {"iter", ls.iter},
                                 {"last_overflow", ls.last_overflow},
                                 {"skipped", ls.skipped}};
  }
  if (o_.data_plan) {  // the sampler and curriculum at the next step (informative: a pure function
                       // of the step, so a resume recomputes them and checks they agree)
    const step_plan p = o_.data_plan->at(step);
    req->state["data"] = {{"micro_batch", int64_t(step) * o_.train.grad_accum},
                          {"rows", p.rows},
                          {"seq_len", p.t},
                          {"seqlen_difficulty", p.seqlen},
                          {"pool_difficulty", p.pool_difficulty},
                          {"pool_metric", o_.data_plan->pool_metric()},
                          {"ltd_keep", p.ltd_keep}};
  }
  req->snapshots = ranks_.snapshot();
  sink_.checkpoint(std::move(req));
  writing_ = true;
}

}  // namespace zf
