#include "storage/checkpoint_commit.hpp"

#include <fmt/format.h>

#include <exception>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/core/error.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
namespace {

// Writes every part into tmp on its own thread (io_uring keeps each one's queue full; the
// threads overlap the CRC work). The first failure is rethrown once all have stopped.
std::vector<fragment> write_parts(const fs::path& tmp, const param_layout& layout,
                                  const std::vector<checkpoint_part>& parts) {
  std::vector<std::vector<fragment>> out(parts.size());
  std::vector<std::exception_ptr> errors(parts.size());
  auto one = [&](std::size_t i) {
    try {
      out[i] = write_shard(tmp, parts[i].file_id, layout, parts[i].slices);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  if (parts.size() == 1) {
    one(0);
  } else {
    std::vector<std::thread> th;
    for (std::size_t i = 0; i < parts.size(); ++i) th.emplace_back(one, i);
    for (auto& t : th) t.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  std::vector<fragment> all;
  for (auto& p : out) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace

checkpoint_committer::checkpoint_committer(fs::path root, param_layout layout, int keep,
                                           commit_group group)
    : root_(std::move(root)), layout_(std::move(layout)), keep_(keep), group_(std::move(group)) {
  if (group_.world < 1 || group_.rank < 0 || group_.rank >= group_.world)
    fail("checkpoint commit: rank {} of {} writers", group_.rank, group_.world);
  if (group_.world > 1 && !group_.store)
    fail("checkpoint commit: {} writers need a key-value store", group_.world);
}

fs::path checkpoint_committer::write(const manifest_info& info,
                                     const std::vector<checkpoint_part>& parts) {
  const bool lead = group_.rank == 0, many = group_.world > 1;
  const std::string key = fmt::format("ckpt/{}/{}", root_.string(), info.step);
  fs::path tmp;
  if (lead) {
    tmp = begin_checkpoint(root_, info.step);
    if (many) group_.store->set(key + "/open", {});
  } else {
    group_.store->get(key + "/open", group_.timeout);  // the leader cleared and created it
    tmp = checkpoint_tmp_dir(root_, info.step);
  }
  phase("open");
  try {
    auto all = write_parts(tmp, layout_, parts);
    phase("written");
    if (!lead) {
      group_.store->set(key + "/frag/" + std::to_string(group_.rank), encode_fragments(all));
      return {};
    }
    for (int r = 1; r < group_.world; ++r) {
      auto bytes = group_.store->get(key + "/frag/" + std::to_string(r), group_.timeout);
      if (const auto failed = peer_failure(bytes))
        fail("checkpoint commit: writer {} could not write its part: {}", r, *failed);
      auto theirs = decode_fragments(bytes);
      all.insert(all.end(), theirs.begin(), theirs.end());
    }
    phase("collected");
    write_manifest(root_, tmp, layout_, all, info);
    phase("manifest");
    return publish_checkpoint(root_, tmp, info.step, keep_);
  } catch (const error& e) {
    // A failure we report (a full disk, a peer that never answered): the leader removes the
    // partial folder, whose data would otherwise keep a full disk full; a follower tells the
    // leader at once instead of leaving it to wait out the group timeout. Anything else (a
    // test's simulated crash) leaves it, as a crash would.
    if (lead) abandon_checkpoint(tmp);
    if (!lead && many) {
      std::string msg = nlohmann::json{{"error", e.what()}}.dump();
      group_.store->set(key + "/frag/" + std::to_string(group_.rank), {msg.begin(), msg.end()});
    }
    throw;
  }
}

std::vector<char> encode_fragments(const std::vector<fragment>& fs) {
  nlohmann::json j = nlohmann::json::array();
  for (auto& f : fs)
    j.push_back({f.tensor, f.kind, f.file, f.offset, f.length, f.elem_begin, f.crc32,
                 std::string(dtype_name(f.dtype))});
  std::string s = j.dump();
  return {s.begin(), s.end()};
}

std::optional<std::string> peer_failure(const std::vector<char>& bytes) {
  // A fragment list is a JSON array; a follower's failure report is {"error": "<message>"}.
  if (bytes.empty() || bytes.front() != '{') return std::nullopt;
  try {
    return nlohmann::json::parse(bytes.begin(), bytes.end()).at("error").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return "(an unreadable failure report)";
  }
}

std::vector<fragment> decode_fragments(const std::vector<char>& bytes) {
  std::vector<fragment> out;
  try {
    for (auto& e : nlohmann::json::parse(bytes.begin(), bytes.end())) {
      auto t = parse_dtype(e.at(7).get<std::string>());
      if (!t) fail("checkpoint commit: a peer sent fragment dtype {}", e.at(7).dump());
      out.push_back({e.at(0), e.at(1), e.at(2), e.at(3), e.at(4), e.at(5), e.at(6), *t});
    }
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint commit: a peer's fragment list is malformed: {}", e.what());
  }
  return out;
}

}  // namespace zf::storage
