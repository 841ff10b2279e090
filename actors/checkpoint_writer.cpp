#include "actors/checkpoint_writer.hpp"

#include <thread>

#include "storage/checkpoint.hpp"

namespace zf::actors {
namespace {

// Persists a job: `writers` threads each write a contiguous slice of the snapshot into their own
// data file (io_uring, in parallel), then the manifest is committed atomically.
std::string persist(const checkpoint_job& job, int writers) {
  const std::size_t total = job.layout.total;
  const auto tmp = storage::begin_checkpoint(job.root, job.step);
  std::vector<std::vector<storage::fragment>> parts(writers);
  std::vector<std::string> errors(writers);
  std::vector<std::thread> th;
  const std::size_t per = (total + writers - 1) / writers;
  for (int w = 0; w < writers; ++w)
    th.emplace_back([&, w] {
      storage::shard_data s;
      s.begin = std::min(total, per * w);
      s.end = std::min(total, per * (w + 1));
      s.params = job.params.data() + s.begin;
      if (job.exp_avg.size()) {
        s.exp_avg = job.exp_avg.data() + s.begin;
        s.exp_avg_sq = job.exp_avg_sq.data() + s.begin;
      }
      try {
        parts[w] = storage::write_shard(tmp, w, job.layout, s);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : errors)
    if (!e.empty()) throw std::runtime_error(e);
  std::vector<storage::fragment> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  storage::manifest_info info;
  info.step = job.step;
  info.world = job.world;
  info.zero_stage = job.zero_stage;
  info.config_toml = job.config_toml;
  info.state = job.state;
  return storage::commit_checkpoint(job.root, tmp, job.layout, all, info, job.keep).string();
}

writer_actor::behavior_type checkpoint_writer(writer_actor::pointer self, int writers) {
  (void)self;
  return {
      [writers](save_atom, const checkpoint_job_ptr& job) -> caf::result<std::string> {
        try {
          return persist(*job, writers);
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
      },
  };
}

}  // namespace

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, int writers) {
  return sys.spawn<caf::detached>(checkpoint_writer, std::max(1, writers));
}

}  // namespace zf::actors
