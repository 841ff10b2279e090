// batch_source over the data_sampler actor and train_sink over the monitor and checkpoint_writer
// actors (train_adapters.hpp).
#include <cstdio>
#include <deque>
#include <optional>

#include "actors/train_adapters.hpp"

namespace zf::actors {
namespace {

using detail::await;

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
    timing_ = std::make_shared<write_timing>();
    write_.emplace(
        self_->request(writer_, caf::infinite, save_atom::value, std::move(req), timing_));
  }
  double checkpoint_write_ms() override { return timing_ ? timing_->ms.load() : -1; }
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
      std::declval<writer_actor&>(), caf::infinite, save_atom::value, checkpoint_request_ptr{},
      write_timing_ptr{}));
  caf::scoped_actor& self_;
  monitor_actor monitor_;
  writer_actor writer_;
  std::optional<handle> write_;
  write_timing_ptr timing_;  // the latest write's, filled by the writer when it is over
};

}  // namespace

std::unique_ptr<batch_source> make_sampler_source(caf::scoped_actor& self, sampler_actor sampler) {
  return std::make_unique<sampler_source>(self, std::move(sampler));
}

std::unique_ptr<train_sink> make_actor_sink(caf::scoped_actor& self, monitor_actor monitor,
                                            writer_actor writer) {
  return std::make_unique<actor_sink>(self, std::move(monitor), std::move(writer));
}

}  // namespace zf::actors
