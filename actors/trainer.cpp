#include "actors/trainer.hpp"

#include <chrono>
#include <cmath>
#include <deque>

#include "runtime/error.hpp"
#include "runtime/optim.hpp"

namespace zf::actors {
namespace {

using clock_type = std::chrono::steady_clock;

struct run_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class trainer_loop {
 public:
  trainer_loop(caf::blocking_actor* self, trainer_setup s) : self_(self), s_(std::move(s)) {}

  void run() {
    auto& r = *s_.result;
    r.first_step = r.final_step = s_.start_step;
    const auto& t = s_.cfg.train;
    const int ranks = static_cast<int>(s_.workers.size());
    next_index_ = int64_t(s_.start_step) * t.grad_accum * ranks;
    auto t0 = clock_type::now();
    int64_t tokens = 0;
    try {
      for (int step = s_.start_step; step < t.steps; ++step) {
        auto ts = clock_type::now();
        double loss = train_step(step);
        double step_ms = std::chrono::duration<double, std::milli>(clock_type::now() - ts).count();
        int64_t step_tokens = int64_t(t.batch_size) * t.seq_len * t.grad_accum * ranks;
        tokens += step_tokens;
        r.losses.push_back(static_cast<float>(loss));
        r.final_step = step + 1;
        step_metrics m;
        m.step = step + 1;
        m.total_steps = t.steps;
        m.loss = loss;
        m.lr = lr_;
        m.grad_norm = grad_norm_;
        m.step_ms = step_ms;
        m.tokens_per_s = step_tokens / (step_ms / 1000.0);
        m.tokens = tokens;
        m.elapsed_s = std::chrono::duration<double>(clock_type::now() - t0).count();
        m.param_bytes = s_.param_bytes;
        m.grad_bytes = s_.grad_bytes;
        m.optim_bytes = s_.optim_bytes;
        const bool last = step + 1 == t.steps;
        const bool stopping =
            (s_.stop && s_.stop->load()) || (s_.stop_at_step > 0 && step + 1 >= s_.stop_at_step);
        if (t.eval_every > 0 && ((step + 1) % t.eval_every == 0 || last)) {
          m.val_loss = evaluate();
          r.val_losses.emplace_back(step + 1, static_cast<float>(m.val_loss));
        }
        if (s_.monitor) self_->send(s_.monitor, metrics_atom::value, m);
        if (!s_.checkpoint_root.empty() &&
            (last || stopping || (t.checkpoint_every > 0 && (step + 1) % t.checkpoint_every == 0)))
          checkpoint(step + 1);
        if (stopping && !last) {
          r.interrupted = true;
          note("interrupted: stopped after step " + std::to_string(step + 1));
          break;
        }
      }
      wait_for_writer();
    } catch (const run_error& e) {
      r.error = e.what();
    }
    if (s_.monitor)
      self_->request(s_.monitor, caf::infinite, flush_atom::value)
          .receive([](bool) {}, [](caf::error&) {});
  }

 private:
  template <class T, class Handle>
  T get(Handle&& h, const char* what) {
    T out{};
    std::move(h).receive(
        [&](T v) { out = std::move(v); },
        [&](caf::error& e) {
          throw run_error(std::string(what) + " failed: " + self_->system().render(e));
        });
    return out;
  }

  void note(const std::string& text) {
    if (s_.monitor)
      self_->send(s_.monitor, note_atom::value, text);
    else
      std::fprintf(stderr, "%s\n", text.c_str());
  }

  batch_ptr next_batch() {
    while (static_cast<int>(pending_.size()) < s_.cfg.train.prefetch)
      pending_.push_back(self_->request(s_.sampler, caf::infinite, train_atom::value,
                                        next_index_ + int64_t(pending_.size())));
    auto h = std::move(pending_.front());
    pending_.pop_front();
    ++next_index_;
    auto b = get<batch_ptr>(std::move(h), "data sampler");
    // keep the credit window full while the workers compute
    pending_.push_back(self_->request(s_.sampler, caf::infinite, train_atom::value,
                                      next_index_ + int64_t(pending_.size())));
    return b;
  }

  double train_step(int step) {
    const auto& t = s_.cfg.train;
    for (auto& w : s_.workers)
      get<bool>(self_->request(w, caf::infinite, zero_atom::value), "zero_grad");
    double loss = 0;
    const float scale = 1.0f / (t.grad_accum * static_cast<float>(s_.workers.size()));
    for (int micro = 0; micro < t.grad_accum; ++micro)
      for (auto& w : s_.workers) {
        batch_ptr b = next_batch();
        loss += get<float>(self_->request(w, caf::infinite, fwdbwd_atom::value, b, scale),
                           "forward/backward");
      }
    loss /= t.grad_accum * static_cast<double>(s_.workers.size());
    double sq = 0;
    for (auto& sh : s_.shards)
      sq += get<double>(self_->request(sh, caf::infinite, gnorm_atom::value), "grad norm");
    grad_norm_ = std::sqrt(sq);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm_))
      throw run_error("step " + std::to_string(step + 1) +
                      ": loss or gradient is not finite (loss " + std::to_string(loss) +
                      "); lower train.lr?");
    const float coef = clip_coefficient(grad_norm_, t.grad_clip);
    lr_ = lr_at(t, step);
    for (auto& sh : s_.shards)
      get<bool>(self_->request(sh, caf::infinite, apply_atom::value, lr_, step + 1, coef),
                "optimizer step");
    return loss;
  }

  double evaluate() {
    const auto& t = s_.cfg.train;
    double sum = 0;
    for (int i = 0; i < t.eval_batches; ++i) {
      auto b =
          get<batch_ptr>(self_->request(s_.sampler, caf::infinite, valid_atom::value, int64_t(i)),
                         "validation batch");
      sum += get<float>(self_->request(s_.workers[0], caf::infinite, evaluate_atom::value, b),
                        "evaluation");
    }
    return sum / t.eval_batches;
  }

  void wait_for_writer() {
    if (!writing_) return;
    writing_ = false;
    s_.result->last_checkpoint = get<std::string>(std::move(*write_), "checkpoint write");
    write_.reset();
  }

  void checkpoint(int step) {
    wait_for_writer();  // one write in flight: the credit that bounds snapshot memory
    auto job = std::make_shared<checkpoint_job>();
    job->root = s_.checkpoint_root;
    job->keep = s_.cfg.train.keep_checkpoints;
    job->step = step;
    job->config_toml = s_.config_toml;
    job->layout = s_.layout;
    job->state = {{"step", step}, {"seed", s_.cfg.train.seed}};
    std::vector<snapshot_ptr> snaps;
    for (auto& sh : s_.shards)
      snaps.push_back(
          get<snapshot_ptr>(self_->request(sh, caf::infinite, snapshot_atom::value), "snapshot"));
    if (snaps.size() == 1) {
      job->params = std::move(snaps[0]->params);
      job->exp_avg = std::move(snaps[0]->exp_avg);
      job->exp_avg_sq = std::move(snaps[0]->exp_avg_sq);
    } else {
      const std::size_t n = s_.layout.total;
      job->params.resize(n);
      job->exp_avg.resize(n);
      job->exp_avg_sq.resize(n);
      for (auto& sn : snaps) {
        std::copy_n(sn->params.data(), sn->end - sn->begin, job->params.data() + sn->begin);
        std::copy_n(sn->exp_avg.data(), sn->end - sn->begin, job->exp_avg.data() + sn->begin);
        std::copy_n(sn->exp_avg_sq.data(), sn->end - sn->begin, job->exp_avg_sq.data() + sn->begin);
      }
    }
    write_.emplace(self_->request(s_.writer, caf::infinite, save_atom::value, job));
    writing_ = true;
  }

  using batch_handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<sampler_actor&>(), caf::infinite, train_atom::value, int64_t{}));
  using write_handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<writer_actor&>(), caf::infinite, save_atom::value, checkpoint_job_ptr{}));
  caf::blocking_actor* self_;
  trainer_setup s_;
  std::deque<batch_handle> pending_;
  int64_t next_index_ = 0;
  std::optional<write_handle> write_;
  bool writing_ = false;
  double lr_ = 0, grad_norm_ = 0;
};

}  // namespace

caf::actor spawn_trainer(caf::actor_system& sys, trainer_setup setup) {
  // The setup travels as a spawn argument (not a capture): CAF 0.17 binds a reference to a
  // null tuple for argument-less spawns, which UBSan reports.
  auto body = [](caf::blocking_actor* self, std::shared_ptr<trainer_setup> s) {
    trainer_loop(self, std::move(*s)).run();
  };
  return sys.spawn(body, std::make_shared<trainer_setup>(std::move(setup)));
}

}  // namespace zf::actors
