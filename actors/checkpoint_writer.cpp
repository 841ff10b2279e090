#include "actors/checkpoint_writer.hpp"

#include <memory>

#include "storage/zero_checkpoint.hpp"

namespace zf::actors {
namespace {

struct writer_state {
  std::unique_ptr<storage::checkpoint_committer> committer;
  std::string config_toml;
};

writer_actor::behavior_type checkpoint_writer(writer_actor::stateful_pointer<writer_state> self,
                                              std::shared_ptr<writer_state> init) {
  self->state = std::move(*init);
  return {
      [self](save_atom, const checkpoint_request_ptr& req) -> caf::result<std::string> {
        storage::manifest_info info;
        info.step = req->step;
        info.world = req->world;
        info.zero_stage = req->zero_stage;
        info.config_toml = self->state.config_toml;
        info.state = req->state;
        std::vector<storage::checkpoint_part> parts;
        for (auto& s : req->snapshots) parts.push_back(storage::part_of(*s));
        try {
          return self->state.committer->write(info, parts).string();
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
      },
  };
}

}  // namespace

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, storage::checkpoint_committer c,
                                     std::string config_toml) {
  // State travels as a spawn argument (not a capture): see spawn_trainer.
  auto init = std::make_shared<writer_state>(writer_state{
      std::make_unique<storage::checkpoint_committer>(std::move(c)), std::move(config_toml)});
  return sys.spawn<caf::detached>(checkpoint_writer, std::move(init));
}

}  // namespace zf::actors
