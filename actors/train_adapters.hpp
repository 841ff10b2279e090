#pragma once
// The train loop's ports (runtime/train/train_loop.hpp) over CAF: the ranks are rank_worker +
// optimizer_shard actors (train_ranks.cpp), batches come from the data_sampler, metrics go to the
// monitor and checkpoints to the checkpoint_writer (train_io.cpp). Every request goes through one
// blocking actor on the caller's thread (the trainer's own, detached); a CAF error becomes a
// zf::error naming what failed, which ends the run with result.error.
#include <memory>
#include <utility>
#include <vector>

#include "actors/train_protocol.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

// workers[r] and shards[r] wrap the same local rank r.
std::unique_ptr<rank_group> make_actor_ranks(caf::scoped_actor& self,
                                             std::vector<worker_actor> workers,
                                             std::vector<shard_actor> shards);
std::unique_ptr<batch_source> make_sampler_source(caf::scoped_actor& self, sampler_actor sampler);
// monitor and writer may be invalid (no such stage): notes then go to stderr.
std::unique_ptr<train_sink> make_actor_sink(caf::scoped_actor& self, monitor_actor monitor,
                                            writer_actor writer);

namespace detail {

// The reply of h, or zf::error "<what> failed: <CAF error>".
template <class T, class Handle>
T await(caf::scoped_actor& self, Handle&& h, const char* what) {
  T out{};
  std::move(h).receive(
      [&](T& v) { out = std::move(v); },
      [&](caf::error& e) { fail("{} failed: {}", what, self->system().render(e)); });
  return out;
}

}  // namespace detail

}  // namespace zf::actors
