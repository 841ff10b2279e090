#pragma once
// The commit protocol of one checkpoint step written by one process or by several (SPMD ranks,
// each writing the slices its ranks own into the same step folder on a shared file system):
//   1. the leader (writer rank 0) creates ROOT/step-N.tmp (clearing a crashed write's leftover)
//      and announces it on the group's key-value store ("open");
//   2. every process waits for "open", writes its parts (one data file each, in parallel, each
//      fsynced by write_shard) and publishes its fragment list on the store ("frag/R");
//   3. the leader collects every other process's fragments, writes and fsyncs the manifest,
//      renames step-N.tmp to step-N, fsyncs ROOT, then moves `latest` (publish_checkpoint).
// A crash anywhere before the rename leaves only a .tmp folder, which no reader opens: the
// previous checkpoint and `latest` stay intact. A reported failure (zf::error: a full disk, a
// peer that never answered) also removes the .tmp folder on the leader. A failure after the
// rename (the fsync of ROOT, `latest`) leaves a complete step-N, which resume takes, and which a
// retry of the same step finishes instead of being refused by it. Non-leaders return once their
// fragments are published; only the leader knows (and returns) the committed folder. Keys are
// scoped by root and step; a store lives for one launch (the rendezvous), so a step is written at
// most once per store.
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/dist/comm.hpp"
#include "storage/checkpoint.hpp"

namespace zf::storage {

struct commit_group {                     // the processes writing one checkpoint together
  std::shared_ptr<comm::kv_store> store;  // null: this process writes alone
  int rank = 0, world = 1;                // this process among them; rank 0 leads
  std::chrono::milliseconds timeout = std::chrono::minutes(10);  // for each wait on the store
};

struct checkpoint_part {  // one data file: rank-<file_id>.bin holding these slices
  int file_id = 0;
  std::vector<shard_data> slices;
};

class checkpoint_committer {
 public:
  checkpoint_committer(std::filesystem::path root, param_layout layout, int keep = 3,
                       commit_group group = {});

  // Writes `parts` (one thread per part) into step info.step's folder and runs the protocol
  // above. Returns the committed step folder on the leader, an empty path elsewhere. zf::error
  // on any failure (the step is then not committed, and the previous one is untouched).
  std::filesystem::path write(const manifest_info& info, const std::vector<checkpoint_part>& parts);

  // Test hook: called at "open", "written", "collected" (leader: every fragment in),
  // "manifest" (leader: the manifest is durable, the rename is next). Throwing from it (anything
  // but a zf::error, which is a reported failure and cleaned up) stops the protocol there, as a
  // crash at that moment would.
  std::function<void(std::string_view phase)> on_phase;

  const std::filesystem::path& root() const { return root_; }

 private:
  void phase(std::string_view p) const {
    if (on_phase) on_phase(p);
  }
  std::filesystem::path root_;
  param_layout layout_;
  int keep_;
  commit_group group_;
};

// A fragment list as bytes for the store, and back (JSON; dtype included).
std::vector<char> encode_fragments(const std::vector<fragment>& fs);
std::vector<fragment> decode_fragments(const std::vector<char>& bytes);
// What a follower published instead of its fragments when it failed ({"error": message}), or
// nullopt for a fragment list.
std::optional<std::string> peer_failure(const std::vector<char>& bytes);

}  // namespace zf::storage
