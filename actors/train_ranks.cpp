// rank_group over the rank_worker and optimizer_shard actors of this process (train_adapters.hpp).
#include "actors/train_adapters.hpp"

namespace zf::actors {
namespace {

using detail::await;

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
  moe::step_stats moe_stats() override {
    moe::step_stats all;
    for (auto& v : each<std::vector<double>>(
             "moe figures", [&](int r) { return ask(workers_[r], moe_atom::value); }))
      all.add(moe::step_stats::unpack(v));
    return all;
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

}  // namespace

std::unique_ptr<rank_group> make_actor_ranks(caf::scoped_actor& self,
                                             std::vector<worker_actor> workers,
                                             std::vector<shard_actor> shards) {
  return std::make_unique<actor_ranks>(self, std::move(workers), std::move(shards));
}

}  // namespace zf::actors
