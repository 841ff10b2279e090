#include "actors/checkpoint_writer.hpp"

#include <fmt/format.h>

#include <thread>

#include "runtime/error.hpp"
#include "storage/checkpoint.hpp"

namespace zf::actors {
namespace {

using storage::fragment;

storage::shard_data slice_of(const checkpoint_job& job, std::size_t begin, std::size_t end) {
  storage::shard_data s;
  s.begin = begin;
  s.end = end;
  s.params = job.params.data() + begin;
  if (job.exp_avg.size()) {
    s.exp_avg = job.exp_avg.data() + begin;
    s.exp_avg_sq = job.exp_avg_sq.data() + begin;
  }
  return s;
}

// Writes slices[i] as file ids[i], on one thread per slice.
std::vector<fragment> write_parallel(const checkpoint_job& job, const std::filesystem::path& tmp,
                                     const std::vector<std::pair<std::size_t, std::size_t>>& slices,
                                     const std::vector<int>& ids) {
  std::vector<std::vector<fragment>> parts(slices.size());
  std::vector<std::string> errors(slices.size());
  std::vector<std::thread> th;
  for (std::size_t i = 0; i < slices.size(); ++i)
    th.emplace_back([&, i] {
      try {
        parts[i] = storage::write_shard(tmp, ids[i], job.layout,
                                        slice_of(job, slices[i].first, slices[i].second));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : errors)
    if (!e.empty()) fail("{}", e);
  std::vector<fragment> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

std::vector<char> encode(const std::vector<fragment>& fs) {
  nlohmann::json j = nlohmann::json::array();
  for (auto& f : fs)
    j.push_back({f.tensor, f.kind, f.file, f.offset, f.length, f.elem_begin, f.crc32});
  std::string s = j.dump();
  return {s.begin(), s.end()};
}

std::vector<fragment> decode(const std::vector<char>& bytes) {
  std::vector<fragment> out;
  for (auto& e : nlohmann::json::parse(bytes.begin(), bytes.end()))
    out.push_back({e[0], e[1], e[2], e[3], e[4], e[5], e[6]});
  return out;
}

std::string commit(const checkpoint_job& job, const std::filesystem::path& tmp,
                   const std::vector<fragment>& all) {
  storage::manifest_info info;
  info.step = job.step;
  info.world = job.world;
  info.zero_stage = job.zero_stage;
  info.config_toml = job.config_toml;
  info.state = job.state;
  return storage::commit_checkpoint(job.root, tmp, job.layout, all, info, job.keep).string();
}

std::string persist(const checkpoint_job& job, int writers, const writer_group& g) {
  const std::size_t total = job.layout.total;
  if (!g.store) {  // one process: contiguous slices of the whole snapshot, one file each
    const auto tmp = storage::begin_checkpoint(job.root, job.step);
    std::vector<std::pair<std::size_t, std::size_t>> slices;
    std::vector<int> ids;
    const std::size_t per = (total + writers - 1) / writers;
    for (int w = 0; w < writers; ++w) {
      slices.push_back({std::min(total, per * w), std::min(total, per * (w + 1))});
      ids.push_back(w);
    }
    return commit(job, tmp, write_parallel(job, tmp, slices, ids));
  }
  // Process group: this process writes what its ranks own; files are numbered k*world + rank.
  const std::string key = fmt::format("ckpt/{}/{}", job.root.string(), job.step);
  const auto wait = std::chrono::minutes(10);
  std::filesystem::path tmp;
  if (g.rank == 0) {
    tmp = storage::begin_checkpoint(job.root, job.step);
    g.store->set(key + "/open", {});
  } else {
    g.store->get(key + "/open", wait);
    tmp = job.root / fmt::format("step-{:06d}.tmp", job.step);
  }
  std::vector<std::pair<std::size_t, std::size_t>> slices;
  std::vector<int> ids;
  for (std::size_t i = 0; i + 1 < job.slices.size(); i += 2) {
    slices.push_back({job.slices[i], job.slices[i] + job.slices[i + 1]});
    ids.push_back(static_cast<int>(i / 2) * g.world + g.rank);
  }
  auto mine = write_parallel(job, tmp, slices, ids);
  if (g.rank != 0) {
    g.store->set(key + "/frag/" + std::to_string(g.rank), encode(mine));
    return "";
  }
  for (int r = 1; r < g.world; ++r) {
    auto theirs = decode(g.store->get(key + "/frag/" + std::to_string(r), wait));
    mine.insert(mine.end(), theirs.begin(), theirs.end());
  }
  return commit(job, tmp, mine);
}

writer_actor::behavior_type checkpoint_writer(writer_actor::pointer self, int writers,
                                              writer_group g) {
  (void)self;
  return {
      [writers, g](save_atom, const checkpoint_job_ptr& job) -> caf::result<std::string> {
        try {
          return persist(*job, writers, g);
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
      },
  };
}

}  // namespace

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, int writers, writer_group group) {
  return sys.spawn<caf::detached>(checkpoint_writer, std::max(1, writers), std::move(group));
}

}  // namespace zf::actors
