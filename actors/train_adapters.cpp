#include "actors/train_adapters.hpp"

#include <cstdio>
#include <deque>
#include <optional>

#include "runtime/error.hpp"

namespace zf::actors {
namespace {

template <class T, class Handle>
T await(caf::scoped_actor& self, Handle&& h, const char* what) {
  T out{};
  std::move(h).receive(
      [&](T& v) { out = std::move(v); },
      [&](caf::error& e) { fail("{} failed: {}", what, self->system().render(e)); });
  return out;
}

class actor_ranks final : public rank_group {
  template <class Actor, class... Ts>
  auto ask(const Actor& a, const Ts&... args) {
    return self_->request(a, caf::infinite, args...);
  }
  // Sends every rank's request (send(r)) before waiting for any reply: the ranks run
  // collectives inside these handlers, so they must all be in them at once.
  template <class T, class Send>
  std::vector<T> each(const char* what, Send send) {
    std::vector<decltype(send(0))> hs;
    for (int r = 0; r < size(); ++r) hs.push_back(send(r));
    std::vector<T> out;
    for (auto& h : hs) out.push_back(await<T>(self_, std::move(h), what));
    return out;
  }

 public:
  actor_ranks(caf::scoped_actor& self, std::vector<worker_actor> w, std::vector<shard_actor> s)
      : self_(self), workers_(std::move(w)), shards_(std::move(s)) {}
  int size() const override { return static_cast<int>(workers_.size()); }
  void zero_grad() override {
    each<bool>("zero_grad", [&](int r) { return ask(workers_[r], zero_atom::value); });
  }
  std::vector<float> forward_backward(const std::vector<batch_ptr>& bs, float scale) override {
    return each<float>("forward/backward",
                       [&](int r) { return ask(workers_[r], fwdbwd_atom::value, bs[r], scale); });
  }
  std::vector<float> evaluate(const std::vector<batch_ptr>& bs) override {
    return each<float>("evaluation",
                       [&](int r) { return ask(workers_[r], evaluate_atom::value, bs[r]); });
  }
  void reduce_gradients() override {
    each<bool>("gradient reduction", [&](int r) { return ask(workers_[r], reduce_atom::value); });
  }
  std::vector<double> grad_sq_norms() override {
    return each<double>("grad norm", [&](int r) { return ask(shards_[r], gnorm_atom::value); });
  }
  void step(double lr, int step, float coef) override {
    each<bool>("optimizer step",
               [&](int r) { return ask(shards_[r], apply_atom::value, lr, step, coef); });
  }
  double all_sum(double x) override {
    return await<double>(self_, ask(workers_[0], allsum_atom::value, x), "all-reduce");
  }
  std::vector<zero_snapshot_ptr> snapshot() override {
    return each<zero_snapshot_ptr>("snapshot",
                                   [&](int r) { return ask(shards_[r], snapshot_atom::value); });
  }

 private:
  caf::scoped_actor& self_;
  std::vector<worker_actor> workers_;
  std::vector<shard_actor> shards_;
};

class sampler_source final : public batch_source {
 public:
  sampler_source(caf::scoped_actor& self, sampler_actor s) : self_(self), sampler_(std::move(s)) {}
  void request_train(int64_t micro, int rank) override {
    pending_.push_back(self_->request(sampler_, caf::infinite, train_atom::value, micro,
                                      static_cast<int32_t>(rank)));
  }
  batch_ptr take_train() override {
    auto h = std::move(pending_.front());
    pending_.pop_front();
    return await<batch_ptr>(self_, std::move(h), "data sampler");
  }
  batch_ptr valid(int64_t index) override {
    return await<batch_ptr>(self_,
                            self_->request(sampler_, caf::infinite, valid_atom::value, index),
                            "validation batch");
  }

 private:
  using handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<sampler_actor&>(), caf::infinite, train_atom::value, int64_t{}, int32_t{}));
  caf::scoped_actor& self_;
  sampler_actor sampler_;
  std::deque<handle> pending_;  // answered in order: the credit window
};

class actor_sink final : public train_sink {
 public:
  actor_sink(caf::scoped_actor& self, monitor_actor m, writer_actor w)
      : self_(self), monitor_(std::move(m)), writer_(std::move(w)) {}
  void metrics(const step_metrics& m) override {
    if (monitor_) self_->send(monitor_, metrics_atom::value, m);
  }
  void note(const std::string& text) override {
    if (monitor_)
      self_->send(monitor_, note_atom::value, text);
    else
      std::fprintf(stderr, "%s\n", text.c_str());
  }
  void checkpoint(checkpoint_request_ptr req) override {
    if (!writer_) fail("checkpoint requested without a checkpoint stage");
    write_.emplace(self_->request(writer_, caf::infinite, save_atom::value, std::move(req)));
  }
  std::string wait_checkpoint() override {
    auto h = std::move(*write_);
    write_.reset();
    return await<std::string>(self_, std::move(h), "checkpoint write");
  }
  void flush() override {
    if (monitor_)
      self_->request(monitor_, caf::infinite, flush_atom::value)
          .receive([](bool) {}, [](caf::error&) {});
  }

 private:
  using handle = decltype(std::declval<caf::blocking_actor*>()->request(
      std::declval<writer_actor&>(), caf::infinite, save_atom::value, checkpoint_request_ptr{}));
  caf::scoped_actor& self_;
  monitor_actor monitor_;
  writer_actor writer_;
  std::optional<handle> write_;
};

}  // namespace

std::unique_ptr<rank_group> make_actor_ranks(caf::scoped_actor& self,
                                             std::vector<worker_actor> workers,
                                             std::vector<shard_actor> shards) {
  return std::make_unique<actor_ranks>(self, std::move(workers), std::move(shards));
}

std::unique_ptr<batch_source> make_sampler_source(caf::scoped_actor& self, sampler_actor sampler) {
  return std::make_unique<sampler_source>(self, std::move(sampler));
}

std::unique_ptr<train_sink> make_actor_sink(caf::scoped_actor& self, monitor_actor monitor,
                                            writer_actor writer) {
  return std::make_unique<actor_sink>(self, std::move(monitor), std::move(writer));
}

}  // namespace zf::actors
