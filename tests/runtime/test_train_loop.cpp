// The step loop (runtime/train/train_loop.hpp) without actors: zero_ranks on threads (local
// backend), an in-memory batch source and a recording sink. Losses equal a direct zero_rank loop, 1
// and 2 ranks (and 2 "processes") follow the same curve, evaluation / checkpoint cadences, stop
// conditions, resume, the prefetch credit and errors.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <random>
#include <thread>

#include "runtime/dist/comm.hpp"
#include "runtime/train/local_ranks.hpp"
#include "runtime/train/optim.hpp"
#include "runtime/train/train_loop.hpp"

using namespace zf;

namespace {

constexpr int k_t = 16;

model_config small_model() {
  model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.n_positions = k_t;
  m.vocab_size = 97;
  return m;
}

run_config small_train() {
  run_config t;
  t.train.steps = 6;
  t.train.batch_size = 4;  // per rank
  t.train.seq_len = k_t;
  t.optimizer.lr = 1e-2;
  t.schedule.warmup = 2;
  t.optimizer.weight_decay = 0.1;
  t.optimizer.grad_clip = 1.0;
  t.eval.every = 0;
  t.checkpoint.every = 0;
  t.train.prefetch = 2;
  return t;
}

// Rows [r0, r0 + n) of global batch g of a split (salt): row i depends only on (salt, g, i), so N
// ranks taking rows [r*b, r*b+b) see what one rank with batch N*b sees.
batch_ptr make_batch(int64_t g, int r0, int n, uint32_t salt) {
  auto b = std::make_shared<token_batch>();
  b->index = g;
  b->b = n;
  b->t = k_t;
  for (int i = r0; i < r0 + n; ++i) {
    std::mt19937 rng(salt * 100003u + uint32_t(g) * 1009u + uint32_t(i));
    std::vector<int> row(k_t + 1);
    for (auto& x : row) x = int(rng() % 97);
    b->inputs.insert(b->inputs.end(), row.begin(), row.end() - 1);
    b->targets.insert(b->targets.end(), row.begin() + 1, row.end());
  }
  return b;
}

class memory_source final : public batch_source {
 public:
  explicit memory_source(int rows) : rows_(rows) {}
  void request_train(int64_t micro, int rank) override {
    pending_.push_back({micro, rank});
    requests.push_back({micro, rank});
    max_outstanding = std::max(max_outstanding, pending_.size());
  }
  batch_ptr take_train() override {
    auto [g, r] = pending_.front();
    pending_.pop_front();
    return make_batch(g, r * rows_, rows_, 1);
  }
  // consecutive windows of one validation stream, as storage::dataset::fill_val
  batch_ptr valid(int64_t index) override {
    valid_indices.push_back(index);
    return make_batch(0, static_cast<int>(index) * rows_, rows_, 2);
  }
  std::vector<std::pair<int64_t, int>> requests;
  std::vector<int64_t> valid_indices;
  std::size_t max_outstanding = 0;

 private:
  int rows_;
  std::deque<std::pair<int64_t, int>> pending_;
};

struct recording_sink final : train_sink {
  std::vector<step_metrics> ms;
  std::vector<std::string> notes;
  std::vector<checkpoint_request_ptr> reqs;
  bool in_flight = false, overlapped = false;
  int flushes = 0;
  std::function<void(const step_metrics&)> on_metrics;
  void metrics(const step_metrics& m) override {
    ms.push_back(m);
    if (on_metrics) on_metrics(m);
  }
  void note(const std::string& t) override { notes.push_back(t); }
  void checkpoint(checkpoint_request_ptr r) override {
    overlapped = overlapped || in_flight;
    in_flight = true;
    reqs.push_back(std::move(r));
  }
  std::string wait_checkpoint() override {
    in_flight = false;
    return "ckpt-" + std::to_string(reqs.back()->step);
  }
  void flush() override { ++flushes; }
};

std::vector<float> initial_params() {
  transformer model(small_model());
  model.init_weights(7);
  return {model.params().data(), model.params().data() + model.layout().total};
}

// `world` ranks at `stage` over one local communicator, all starting from initial_params().
struct ranks_fixture {
  std::vector<std::unique_ptr<comm::communicator>> comms;
  std::vector<std::unique_ptr<zero_rank>> ranks;
  ranks_fixture(int world, int stage, const run_config& t) : comms(comm::make_local_group(world)) {
    const auto init = initial_params();
    for (auto& c : comms) {
      ranks.push_back(std::make_unique<zero_rank>(spec_of(small_model()), t.optimizer, stage, *c));
      ranks.back()->import_state(init.data(), nullptr, nullptr);
    }
  }
  std::vector<zero_rank*> ptrs() {
    std::vector<zero_rank*> out;
    for (auto& r : ranks) out.push_back(r.get());
    return out;
  }
};

train_loop_options options(const run_config& t, int stage = 0) {
  train_loop_options o = loop_options_of(t);
  o.zero_stage = stage;
  return o;
}

// `world` thread ranks with batch_size = global_rows / world each.
train_result run(int world, int stage, run_config t, recording_sink& sink,
                 memory_source* src = nullptr, int global_rows = 4) {
  t.train.batch_size = global_rows / world;
  ranks_fixture f(world, stage, t);
  local_rank_group g(f.ptrs());
  memory_source own(t.train.batch_size);
  return train_loop(options(t, stage), g, src ? *src : own, sink).run();
}

// The loop's arithmetic written out on one zero_rank, micro-batches accumulated.
std::vector<float> direct_losses(int steps, int rows, int accum) {
  const run_config t = small_train();
  auto comms = comm::make_local_group(1);
  zero_rank z(spec_of(small_model()), t.optimizer, 0, *comms[0]);
  const auto init = initial_params();
  z.import_state(init.data(), nullptr, nullptr);
  std::vector<float> out;
  for (int s = 0; s < steps; ++s) {
    z.zero_grad();
    double loss = 0;
    for (int m = 0; m < accum; ++m) {
      auto b = make_batch(int64_t(s) * accum + m, 0, rows, 1);
      loss += z.forward_backward(b->inputs.data(), b->targets.data(), rows, k_t, 1.0f / accum);
    }
    z.reduce_gradients();
    const double norm = std::sqrt(z.grad_sq_norm());
    z.step(lr_at(t, s), s + 1, clip_coefficient(norm, t.optimizer.grad_clip));
    out.push_back(static_cast<float>(loss / accum));
  }
  return out;
}

void check_close(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(a[i] - b[i]) <= 1e-5 * std::abs(b[i]));
  }
}

}  // namespace

TEST_CASE("train loop: one rank gives exactly the losses of a direct zero_rank loop") {
  for (int accum : {1, 2}) {
    CAPTURE(accum);
    run_config t = small_train();
    t.train.grad_accum = accum;
    recording_sink sink;
    auto r = run(1, 0, t, sink);
    CHECK(r.error.empty());
    CHECK(r.losses == direct_losses(t.train.steps, 4, accum));  // bit for bit
    CHECK(r.first_step == 0);
    CHECK(r.final_step == t.train.steps);
    CHECK_FALSE(r.interrupted);
    REQUIRE(sink.ms.size() == std::size_t(t.train.steps));
    for (int s = 0; s < t.train.steps; ++s) {
      CHECK(sink.ms[s].step == s + 1);
      CHECK(sink.ms[s].loss == doctest::Approx(r.losses[s]));
      CHECK(sink.ms[s].lr == doctest::Approx(lr_at(t, s)));
      CHECK(sink.ms[s].tokens == int64_t(s + 1) * 4 * k_t * accum);
      CHECK(sink.ms[s].val_loss < 0);
    }
    REQUIRE(sink.reqs.size() == 1);  // checkpoint.every 0: only the last step
    CHECK(sink.reqs[0]->step == t.train.steps);
    CHECK(sink.flushes == 1);
  }
}

TEST_CASE("train loop: 1 and 2 ranks at every stage, and 2 processes, give the same losses") {
  const run_config t = small_train();
  recording_sink ref_sink;
  const auto ref = run(1, 0, t, ref_sink).losses;
  for (int stage : {0, 1, 2, 3}) {
    CAPTURE(stage);
    recording_sink sink;
    auto r = run(2, stage, t, sink);
    CHECK(r.error.empty());
    check_close(r.losses, ref);
    CHECK(sink.ms.back().ranks == 2);
  }
  // SPMD shape: two loops (as two processes would run), one rank each, scalars summed through
  // rank_group::all_sum over their communicator.
  run_config t2 = t;
  t2.train.batch_size = 2;
  ranks_fixture f(2, 3, t2);
  std::vector<train_result> rs(2);
  std::vector<std::thread> th;
  for (int p = 0; p < 2; ++p)
    th.emplace_back([&, p] {
      local_rank_group g({f.ranks[p].get()});
      memory_source src(2);
      recording_sink sink;
      auto o = options(t2, 3);
      o.process_rank = p;
      o.process_world = 2;
      rs[p] = train_loop(o, g, src, sink).run();
    });
  for (auto& x : th) x.join();
  for (auto& r : rs) {
    CHECK(r.error.empty());
    check_close(r.losses, ref);
  }
  CHECK(rs[0].losses == rs[1].losses);  // every process reports the group's loss
}

TEST_CASE("train loop: evaluates every eval.every steps and after the last one") {
  run_config t = small_train();
  t.train.steps = 7;
  t.eval.every = 3;
  t.eval.batches = 2;
  std::vector<std::vector<std::pair<int, float>>> vals;
  for (int world : {1, 2}) {
    memory_source src(4 / world);
    recording_sink sink;
    auto r = run(world, 1, t, sink, &src);
    REQUIRE(r.val_losses.size() == 3);
    CHECK(r.val_losses[0].first == 3);
    CHECK(r.val_losses[1].first == 6);
    CHECK(r.val_losses[2].first == 7);
    for (auto& m : sink.ms) CHECK((m.val_loss >= 0) == (m.step == 3 || m.step == 6 || m.step == 7));
    // rank r of N takes validation batch i * N + r
    std::vector<int64_t> want;
    for (int e = 0; e < 3; ++e)
      for (int i = 0; i < t.eval.batches * world; ++i) want.push_back(i);
    CHECK(src.valid_indices == want);
    vals.push_back(r.val_losses);
  }
  // the same windows at 1 and 2 ranks: the same validation losses
  for (std::size_t i = 0; i < 3; ++i)
    CHECK(std::abs(vals[1][i].second - vals[0][i].second) <= 1e-5 * vals[0][i].second);
}

TEST_CASE("train loop: checkpoint requests at the cadence, the last step, one at a time") {
  run_config t = small_train();
  t.train.steps = 7;
  t.checkpoint.every = 3;
  recording_sink sink;
  auto r = run(2, 3, t, sink);
  REQUIRE(sink.reqs.size() == 3);
  CHECK(sink.reqs[0]->step == 3);
  CHECK(sink.reqs[1]->step == 6);
  CHECK(sink.reqs[2]->step == 7);
  CHECK_FALSE(sink.overlapped);  // each write waited for before the next snapshot
  CHECK_FALSE(sink.in_flight);   // and the last one before the run returned
  CHECK(r.last_checkpoint == "ckpt-7");
  auto& q = *sink.reqs.back();
  CHECK(q.world == 2);
  CHECK(q.zero_stage == 3);
  CHECK(q.state["step"] == 7);
  CHECK(q.state["world"] == 2);
  // the snapshots are each rank's share, together the whole layout exactly once
  const std::size_t total = layout_of(small_model()).total;
  REQUIRE(q.snapshots.size() == 2);
  std::vector<int> seen(total, 0);
  std::size_t held = 0;
  for (auto& s : q.snapshots) {
    held += s->params.size();
    for (auto& sl : s->slices)
      for (std::size_t i = sl.flat_begin; i < sl.flat_begin + sl.len; ++i) ++seen[i];
  }
  CHECK(held == total);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
}

TEST_CASE("train loop: stop_at_step and the stop flag stop after the step, with a checkpoint") {
  run_config t = small_train();
  t.train.steps = 10;
  t.checkpoint.every = 3;
  {
    recording_sink sink;
    ranks_fixture f(1, 0, t);
    local_rank_group g(f.ptrs());
    memory_source src(4);
    auto o = options(t);
    o.stop_at_step = 4;
    auto r = train_loop(o, g, src, sink).run();
    CHECK(r.interrupted);
    CHECK(r.final_step == 4);
    CHECK(r.losses.size() == 4);
    REQUIRE(sink.reqs.size() == 2);
    CHECK(sink.reqs[0]->step == 3);
    CHECK(sink.reqs[1]->step == 4);
    REQUIRE(sink.notes.size() == 1);
    CHECK(sink.notes[0] == "interrupted: stopped after step 4");
  }
  {
    std::atomic<bool> stop{false};
    recording_sink sink;
    sink.on_metrics = [&](const step_metrics& m) { stop = stop || m.step == 2; };  // Ctrl-C
    ranks_fixture f(1, 0, t);
    local_rank_group g(f.ptrs());
    memory_source src(4);
    auto o = options(t);
    o.stop = &stop;
    o.checkpoints = false;  // no checkpoint stage: none is asked for, even when stopping
    auto r = train_loop(o, g, src, sink).run();
    CHECK(r.interrupted);
    CHECK(r.final_step == 3);  // raised during step 2's report: read at the end of step 3
    CHECK(sink.reqs.empty());
  }
}

TEST_CASE("train loop: resuming at step s continues the uninterrupted run exactly") {
  run_config t = small_train();
  recording_sink full_sink;
  const auto full = run(2, 2, t, full_sink).losses;

  ranks_fixture a(2, 2, t);
  t.train.batch_size = 2;
  std::vector<float> p, m, v;
  {
    local_rank_group g(a.ptrs());
    memory_source src(2);
    recording_sink sink;
    auto o = options(t, 2);
    o.stop_at_step = 3;
    auto r = train_loop(o, g, src, sink).run();
    REQUIRE(r.final_step == 3);
    // what a checkpoint holds, assembled from the snapshots
    const std::size_t total = layout_of(small_model()).total;
    p.assign(total, 0), m.assign(total, 0), v.assign(total, 0);
    for (auto& s : sink.reqs.back()->snapshots) {
      std::size_t at = 0;
      for (auto& sl : s->slices) {
        std::copy_n(s->params.data() + at, sl.len, p.data() + sl.flat_begin);
        std::copy_n(s->exp_avg.data() + at, sl.len, m.data() + sl.flat_begin);
        std::copy_n(s->exp_avg_sq.data() + at, sl.len, v.data() + sl.flat_begin);
        at += sl.len;
      }
    }
  }
  ranks_fixture b(2, 2, t);
  for (auto& z : b.ranks) z->import_state(p.data(), m.data(), v.data());
  local_rank_group g(b.ptrs());
  memory_source src(2);
  recording_sink sink;
  auto o = options(t, 2);
  o.start_step = 3;
  auto r = train_loop(o, g, src, sink).run();
  CHECK(r.first_step == 3);
  CHECK(src.requests.front() == std::pair<int64_t, int>{3, 0});  // batches continue at step 3
  REQUIRE(r.losses.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(r.losses[i] == full[3 + i]);
  CHECK(sink.ms.front().step == 4);
}

TEST_CASE("train loop: batches are requested in order within the prefetch credit") {
  run_config t = small_train();
  t.train.prefetch = 3;
  t.train.grad_accum = 2;
  memory_source src(2);
  recording_sink sink;
  run(2, 0, t, sink, &src);
  CHECK(src.max_outstanding == std::size_t(t.train.prefetch * 2));
  for (std::size_t i = 0; i < src.requests.size(); ++i) {
    CAPTURE(i);
    CHECK(src.requests[i] == std::pair<int64_t, int>{int64_t(i / 2), int(i % 2)});
  }
  CHECK(src.requests.size() >= std::size_t(t.train.steps * t.train.grad_accum * 2));
}

namespace {
struct nan_ranks final : rank_group {  // a rank group whose loss diverged
  int size() const override { return 1; }
  void zero_grad() override {}
  std::vector<float> forward_backward(const std::vector<batch_ptr>&, float) override {
    return {std::nanf("")};
  }
  std::vector<float> evaluate(const std::vector<batch_ptr>&) override { return {0}; }
  void reduce_gradients() override {}
  std::vector<double> grad_sq_norms() override { return {1}; }
  void step(double, int, float) override { FAIL("stepped on a NaN loss"); }
  double all_sum(double x) override { return x; }
  std::vector<zero_snapshot_ptr> snapshot() override { return {}; }
};
}  // namespace

TEST_CASE("train loop: a non-finite loss ends the run with an error, not an exception") {
  nan_ranks g;
  memory_source src(4);
  recording_sink sink;
  auto r = train_loop(options(small_train()), g, src, sink).run();
  CHECK(r.error.find("step 1: loss or gradient is not finite") != std::string::npos);
  CHECK(r.losses.empty());
  CHECK(sink.flushes == 1);  // the monitor is still flushed
}

namespace {

// A sink whose writes report finished after `polls` polls of checkpoint_write_ms (or when waited
// for), write w having taken 10 * w ms.
struct timed_sink final : train_sink {
  int polls = 0, polls_left = 0, writes = 0;
  bool done = true;
  std::vector<step_metrics> ms;
  void metrics(const step_metrics& m) override { ms.push_back(m); }
  void note(const std::string&) override {}
  void checkpoint(checkpoint_request_ptr) override {
    ++writes;
    done = false;
    polls_left = polls;
  }
  std::string wait_checkpoint() override {
    done = true;
    return "";
  }
  double checkpoint_write_ms() override {
    if (!done && polls_left-- > 0) return -1;
    done = true;
    return 10.0 * writes;
  }
};

// memory_source, `delay` slower for each train batch taken.
struct slow_source final : batch_source {
  memory_source inner{4};
  std::chrono::milliseconds delay;
  explicit slow_source(std::chrono::milliseconds d) : delay(d) {}
  void request_train(int64_t micro, int rank) override { inner.request_train(micro, rank); }
  batch_ptr take_train() override {
    std::this_thread::sleep_for(delay);
    return inner.take_train();
  }
  batch_ptr valid(int64_t index) override { return inner.valid(index); }
};

}  // namespace

TEST_CASE("train loop: a finished write's duration is reported once, in the step that found it") {
  run_config t = small_train();
  t.train.steps = 6;
  t.checkpoint.every = 2;  // writes after steps 2, 4 and 6
  // polls 1: found finished at the second poll (steps 4 and 6); polls 5: never found finished,
  // waited for by the next checkpoint (after step 4) and reported with step 5; the last write
  // ends after the last metrics either way
  for (auto [polls, expected] : {std::pair{1, std::vector<double>{-1, -1, -1, 10, -1, 20}},
                                 {5, std::vector<double>{-1, -1, -1, -1, 10, -1}}}) {
    CAPTURE(polls);
    timed_sink sink;
    sink.polls = polls;
    ranks_fixture f(1, 0, t);
    local_rank_group g(f.ptrs());
    memory_source src(4);
    auto r = train_loop(options(t), g, src, sink).run();
    REQUIRE(r.error.empty());
    CHECK(sink.writes == 3);
    REQUIRE(sink.ms.size() == 6);
    for (int s = 0; s < 6; ++s) {
      CAPTURE(s);
      CHECK(sink.ms[s].ckpt_write_ms == expected[s]);
    }
  }
}

TEST_CASE("train loop: data_wait_ms is the time a step waited for its batches") {
  run_config t = small_train();
  t.train.steps = 3;
  t.train.grad_accum = 2;  // two batches per step: two waits
  slow_source src(std::chrono::milliseconds(20));
  recording_sink sink;
  ranks_fixture f(1, 0, t);
  local_rank_group g(f.ptrs());
  auto r = train_loop(options(t), g, src, sink).run();
  REQUIRE(r.error.empty());
  REQUIRE(sink.ms.size() == 3);
  for (const auto& m : sink.ms) {
    CAPTURE(m.step);
    CHECK(m.data_wait_ms >= 40);
    CHECK(m.data_wait_ms <= m.step_ms);
  }
  // a source that is always ready: no wait worth the name
  recording_sink fast;
  run(1, 0, t, fast);
  for (const auto& m : fast.ms) CHECK(m.data_wait_ms < 20);
}
