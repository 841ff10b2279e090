#pragma once
// How ZeRO splits the flat layout across ranks (runtime/train/zero.hpp).
//
// The layout is cut into pieces. A dense model has one piece per region (embeddings, each block,
// the final norm), held by every rank. Under expert parallelism ep > 1 (stages 0-2), an MoE
// block's region is cut into its dense part (attention, norms, router: every rank) and ep expert
// slots: slot d = experts [d E/ep, (d+1) E/ep), held only by the ranks r with r % ep == d (the
// ranks that compute those experts, runtime/model/moe_parallel), so a rank holds E/ep experts'
// parameters, gradients and AdamW state, and their gradients are reduced over those W/ep
// replicas alone. Stage 3 shards every piece over all W ranks anyway and keeps one piece per
// region (a region's parameters are gathered whole before use).
//
// A piece's holders each own an equal chunk (a multiple of 16 floats, the tail possibly short):
// holder i owns [begin + i*chunk, +chunk) clipped to the piece. A rank's owned buffer packs the
// chunks of the pieces it holds in layout order; the expert slots of one region share a packed
// offset (a rank holds exactly one of them), so the packing is the same on every rank.
#include <cstddef>
#include <vector>

#include "runtime/model/layout.hpp"

namespace zf {

struct zero_piece {
  region range;            // flat [begin, end) of the layout
  std::size_t reg = 0;     // index of the layout region it lies in
  int slot = -1;           // -1: every rank holds it; d >= 0: the ranks r with r % slots == d
  std::size_t chunk = 0;   // floats each holder owns (multiple of 16)
  std::size_t packed = 0;  // offset of the holder's chunk in its owned buffer
};

struct zero_partition {
  int world = 1, slots = 1;
  std::vector<region> regions;
  std::vector<zero_piece> pieces;  // in layout order
  std::vector<std::size_t> first;  // region i's pieces are [first[i], first[i + 1])
  std::size_t owned_size = 0;      // floats in a rank's owned buffer (sum of its chunks)

  // slots > 1: the experts of every MoE block in `slots` slots (slots divides world and every
  // MoE layer's experts, checked by the caller: zero_rank::set_expert_parallel).
  zero_partition(const param_layout& layout, int world, int slots = 1);
  // One piece per region, every rank (a layout without experts, or tests).
  zero_partition(const std::vector<region>& regions, int world);

  bool holds(int r, const zero_piece& p) const { return p.slot < 0 || r % slots == p.slot; }
  int holders(const zero_piece& p) const { return p.slot < 0 ? world : world / slots; }
  int holder_index(int r, const zero_piece& p) const { return p.slot < 0 ? r : r / slots; }
  // The part of piece p rank r owns (empty when r does not hold p, or at the tail).
  region owned(int r, const zero_piece& p) const;
  // Region i's part owned by rank r when the region is one piece (stage 3 and dense layouts).
  region owned(int r, std::size_t i) const { return owned(r, pieces[first[i]]); }
  // holders * chunk of a piece: the padded buffer its reduce-scatter / all-gather uses.
  std::size_t padded(const zero_piece& p) const { return std::size_t(holders(p)) * p.chunk; }
  std::size_t max_bucket() const;  // max over pieces of padded()
  std::size_t max_chunk() const;   // max over pieces of chunk
  // max padded() over pieces that share their region with others (0 without slots): stage 2
  // reduce-scatters them through a padded copy
  std::size_t max_split_piece() const;
  // Floats a buffer for region i's whole gradients or parameters needs (the region, or its
  // single piece's padding).
  std::size_t region_bucket(std::size_t i) const;
  std::size_t max_block_bucket() const;  // max region_bucket over the regions after the first
  // The flat ranges rank r holds in full at stages 0-2 (all but the other slots' experts),
  // adjacent pieces merged: [0, total) without slots.
  std::vector<region> held(int r) const;
  std::size_t held_size(int r) const;  // floats of held(r)
};

}  // namespace zf
