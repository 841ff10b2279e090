#pragma once
// ZeRO ranks <-> checkpoints, by slices. A rank's snapshot becomes one data file of its own
// slices (the writer never sees a full flat copy), and a rank loads only the ranges it holds
// through load_range, straight into its buffers. Any world size and stage reads any checkpoint:
// fragments are addressed by tensor and element, not by who wrote them.
#include <filesystem>
#include <memory>
#include <vector>

#include "runtime/train/zero.hpp"
#include "storage/checkpoint.hpp"
#include "storage/checkpoint_commit.hpp"

namespace zf::storage {

// The snapshot's slices as one data file, rank-<snapshot rank>.bin (pointers into s, which must
// outlive the write).
checkpoint_part part_of(const zero_snapshot& s);

// Loads rank z's state from the checkpoint m (moments when m holds them) with one load_range
// per range z holds, each fragment staged at most alone. Returns what it read. zf::error
// naming file and tensor on a missing, corrupt or mismatched fragment (z is then half-loaded
// and must be dropped).
load_stats load_rank_state(zero_rank& z, const checkpoint_manifest& m, const param_layout& layout);

// Every rank of this process, each on its own thread; the first error is rethrown.
void load_ranks(const std::vector<std::shared_ptr<zero_rank>>& ranks,
                const std::filesystem::path& dir, const param_layout& layout);

}  // namespace zf::storage
