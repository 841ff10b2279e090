#include "actors/checkpoint_writer.hpp"

#include <chrono>
#include <memory>

#include "storage/zero_checkpoint.hpp"

namespace zf::actors {
namespace {

struct writer_state {
  std::unique_ptr<storage::checkpoint_committer> committer;
  std::string config_toml;
  actor_spans spans;
};

// The committed folder of one request. Throws what the committer throws.
std::string write_checkpoint(writer_state& s, const checkpoint_request& req) {
  storage::manifest_info info;
  info.step = req.step;
  info.world = req.world;
  info.zero_stage = req.zero_stage;
  info.config_toml = s.config_toml;
  info.state = req.state;
  std::vector<storage::checkpoint_part> parts;
  for (auto& snap : req.snapshots) parts.push_back(storage::part_of(*snap));
  return s.committer->write(info, parts).string();
}

writer_actor::behavior_type checkpoint_writer(writer_actor::stateful_pointer<writer_state> self,
                                              std::shared_ptr<writer_state> init) {
  self->state = std::move(*init);
  return {
      [self](save_atom, const checkpoint_request_ptr& req,
             const write_timing_ptr& timing) -> caf::result<std::string> {
        using clock = monitor::span_log::clock;
        const auto t0 = clock::now();
        // the duration (and span) is stored whether the write succeeds or not: the trainer
        // then takes the reply, and with it the error, between two steps
        auto done = [&] {
          const auto t1 = clock::now();
          if (timing) timing->ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
          if (const auto& sp = self->state.spans; sp.log) sp.log->add(sp.actor, "write", t0, t1);
        };
        try {
          std::string dir = write_checkpoint(self->state, *req);
          done();
          return dir;
        } catch (const std::exception& e) {
          done();
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
      },
  };
}

}  // namespace

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, storage::checkpoint_committer c,
                                     std::string config_toml, actor_spans spans) {
  // State travels as a spawn argument (not a capture): see spawn_trainer.
  auto init = std::make_shared<writer_state>(
      writer_state{std::make_unique<storage::checkpoint_committer>(std::move(c)),
                   std::move(config_toml), std::move(spans)});
  return sys.spawn<caf::detached>(checkpoint_writer, std::move(init));
}

}  // namespace zf::actors
