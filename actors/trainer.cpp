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
    const int local = static_cast<int>(s_.workers.size());
    const int ranks = local * s_.process_world;  // global ranks
    next_index_ = int64_t(s_.start_step) * t.grad_accum * local;
    if (s_.comm_bytes) last_comm_ = s_.comm_bytes();
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
        if (s_.comm_bytes) {
          uint64_t now = s_.comm_bytes();
          m.comm_bytes = double(now - last_comm_);
          last_comm_ = now;
        }
        m.ranks = ranks;
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

  // Batches are numbered q = global_micro_batch * ranks + rank; the window of requests in flight
  // is the sampler's credit (train.prefetch per rank).
  auto request_batch(int64_t q) {
    const int64_t n = static_cast<int64_t>(s_.workers.size());
    // SPMD: this process's local rank r is global rank process_rank * n + r
    return self_->request(s_.sampler, caf::infinite, train_atom::value, q / n,
                          static_cast<int32_t>(s_.process_rank * n + q % n));
  }

  batch_ptr next_batch() {
    const int credit = s_.cfg.train.prefetch * static_cast<int>(s_.workers.size());
    while (static_cast<int>(pending_.size()) < credit)
      pending_.push_back(request_batch(next_index_ + int64_t(pending_.size())));
    auto h = std::move(pending_.front());
    pending_.pop_front();
    ++next_index_;
    auto b = get<batch_ptr>(std::move(h), "data sampler");
    // keep the credit window full while the workers compute
    pending_.push_back(request_batch(next_index_ + int64_t(pending_.size())));
    return b;
  }

  // Sends the same request to every actor before waiting for any reply: the ranks run
  // collectives inside these handlers, so they must all be in them at once.
  template <class T, class Actor, class... Ts>
  std::vector<T> on_all(std::vector<Actor>& actors, const char* what, Ts... args) {
    using handle = decltype(self_->request(actors[0], caf::infinite, args...));
    std::vector<handle> hs;
    for (auto& a : actors) hs.push_back(self_->request(a, caf::infinite, args...));
    std::vector<T> out;
    for (auto& h : hs) out.push_back(get<T>(std::move(h), what));
    return out;
  }

  double train_step(int step) {
    const auto& t = s_.cfg.train;
    const int n = static_cast<int>(s_.workers.size());
    on_all<bool>(s_.workers, "zero_grad", zero_atom::value);
    double loss = 0;
    // every rank of the group (all processes) contributes 1/(accum * ranks) of the mean
    const float scale = 1.0f / (t.grad_accum * static_cast<float>(n * s_.process_world));
    using fb_handle = decltype(self_->request(s_.workers[0], caf::infinite, fwdbwd_atom::value,
                                              batch_ptr{}, 1.0f));
    std::vector<fb_handle> hs;
    for (int micro = 0; micro < t.grad_accum; ++micro) {
      hs.clear();
      for (auto& w : s_.workers)
        hs.push_back(self_->request(w, caf::infinite, fwdbwd_atom::value, next_batch(), scale));
      for (auto& h : hs) loss += get<float>(std::move(h), "forward/backward");
    }
    loss /= t.grad_accum * static_cast<double>(n);
    on_all<bool>(s_.workers, "gradient reduction", reduce_atom::value);
    double sq = 0;
    for (double x : on_all<double>(s_.shards, "grad norm", gnorm_atom::value)) sq += x;
    if (s_.spmd) {  // every process holds a share: sum over the group
      loss = all_sum(loss) / s_.process_world;
      sq = all_sum(sq);
    }
    grad_norm_ = std::sqrt(sq);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm_))
      throw run_error("step " + std::to_string(step + 1) +
                      ": loss or gradient is not finite (loss " + std::to_string(loss) +
                      "); lower train.lr?");
    const float coef = clip_coefficient(grad_norm_, t.grad_clip);
    lr_ = lr_at(t, step);
    on_all<bool>(s_.shards, "optimizer step", apply_atom::value, lr_, step + 1, coef);
    return loss;
  }

  // Data-parallel evaluation: rank r takes validation batch i*N + r, so N ranks with batch b see
  // the windows one rank with batch N*b sees.
  double evaluate() {
    const auto& t = s_.cfg.train;
    const int n = static_cast<int>(s_.workers.size());
    double sum = 0;
    for (int i = 0; i < t.eval_batches; ++i) {
      std::vector<batch_ptr> bs;
      for (int r = 0; r < n; ++r)
        bs.push_back(get<batch_ptr>(
            self_->request(s_.sampler, caf::infinite, valid_atom::value,
                           int64_t(i) * n * s_.process_world + s_.process_rank * n + r, int32_t(r)),
            "validation batch"));
      using ev_handle =
          decltype(self_->request(s_.workers[0], caf::infinite, evaluate_atom::value, batch_ptr{}));
      std::vector<ev_handle> hs;
      for (int r = 0; r < n; ++r)
        hs.push_back(self_->request(s_.workers[r], caf::infinite, evaluate_atom::value, bs[r]));
      for (auto& h : hs) sum += get<float>(std::move(h), "evaluation");
    }
    if (s_.spmd) sum = all_sum(sum) / s_.process_world;
    return sum / (double(t.eval_batches) * n);
  }

  double all_sum(double x) {
    return get<double>(self_->request(s_.workers[0], caf::infinite, allsum_atom::value, x),
                       "all-reduce");
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
    job->world = static_cast<int>(s_.shards.size()) * s_.process_world;

    job->zero_stage = s_.zero_stage;
    job->state = {{"step", step},
                  {"seed", s_.cfg.train.seed},
                  {"world", job->world},
                  {"zero_stage", job->zero_stage}};
    job->params.resize(s_.layout.total);
    job->exp_avg.resize(s_.layout.total);
    job->exp_avg_sq.resize(s_.layout.total);
    for (auto& sl : on_all<std::vector<uint64_t>>(s_.shards, "snapshot", snapshot_atom::value, job))
      job->slices.insert(job->slices.end(), sl.begin(), sl.end());
    write_.emplace(self_->request(s_.writer, caf::infinite, save_atom::value, job));
    writing_ = true;
  }

  using batch_handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<sampler_actor&>(), caf::infinite, train_atom::value, int64_t{}, int32_t{}));
  using write_handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<writer_actor&>(), caf::infinite, save_atom::value, checkpoint_job_ptr{}));
  caf::blocking_actor* self_;
  trainer_setup s_;
  std::deque<batch_handle> pending_;
  int64_t next_index_ = 0;
  std::optional<write_handle> write_;
  bool writing_ = false;
  double lr_ = 0, grad_norm_ = 0;
  uint64_t last_comm_ = 0;
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
