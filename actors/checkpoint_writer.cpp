#include "actors/checkpoint_writer.hpp"

#include "storage/checkpoint.hpp"

namespace zf::actors {
namespace {

// `name` only labels the actor; it also keeps CAF 0.17's init_fun_factory from binding a
// reference to a null empty-argument tuple (UBSan flags that for argument-less spawns).
writer_actor::behavior_type checkpoint_writer(writer_actor::pointer self, std::string name) {
  (void)name;
  return {
      [self](save_atom, const checkpoint_job_ptr& job) -> caf::result<std::string> {
        storage::checkpoint_view v;
        v.step = job->step;
        v.config_toml = job->config_toml;
        v.layout = &job->layout;
        v.params = job->params.data();
        v.exp_avg = job->exp_avg.size() ? job->exp_avg.data() : nullptr;
        v.exp_avg_sq = job->exp_avg_sq.size() ? job->exp_avg_sq.data() : nullptr;
        v.state = job->state;
        try {
          return storage::save_checkpoint(job->root, v, job->keep).string();
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
        (void)self;
      },
  };
}

}  // namespace

writer_actor spawn_checkpoint_writer(caf::actor_system& sys) {
  return sys.spawn<caf::detached>(checkpoint_writer, std::string("checkpoint_writer"));
}

}  // namespace zf::actors
