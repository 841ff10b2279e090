#pragma once
// Collectives over a subset of a communicator's ranks, carried by the parent's all_to_all: the
// ZeRO state of MoE experts under expert parallelism is held, reduced and gathered only by the
// ranks that compute those experts (runtime/train/zero_partition.hpp), with no second
// communicator to set up per backend.
//
// Contract: the parent's ranks form disjoint subgroups of equal use, and every rank of the
// parent enters the same subgroup collective at the same time, each with its own subgroup's
// members and the same sizes (ZeRO's expert slots: slot d = the ranks r with r % ep == d, every
// slot holding equal-sized expert ranges). A rank in a subgroup of one still enters: the
// parent's all_to_all is a collective of every rank. Sums run in member order (ascending parent
// rank), each element summed once, by one member, and copied to the others, so every member
// holds identical results (comm.hpp's invariants); a sum over members with the others adding
// zeros gives the same floats as the parent's all-rank sum on the `local` backend.
#include <cstddef>
#include <vector>

#include "runtime/core/tensor.hpp"
#include "runtime/dist/comm.hpp"

namespace zf::comm {

class subgroup {
 public:
  // members: parent ranks in ascending order, holding parent.rank(). parent must outlive this.
  subgroup(communicator& parent, std::vector<int> members);

  int rank() const { return me_; }  // index of the parent's rank in members
  int world() const { return static_cast<int>(members_.size()); }
  const std::vector<int>& members() const { return members_; }

  // comm.hpp's contracts over the members: in [world*chunk] -> out [chunk] (member i's out is
  // the sum of the members' in[i*chunk, +chunk)); out may be in + rank*chunk.
  void reduce_scatter(const float* in, float* out, std::size_t chunk);
  // in [chunk] -> out [world*chunk], block i = member i's in; in may be out + rank*chunk.
  void all_gather(const float* in, float* out, std::size_t chunk);
  // data [n] -> the members' elementwise sum, in place.
  void all_reduce(float* data, std::size_t n);
  // The two sums with bf16's rounding (communicator::all_reduce_bf16's contract: inputs rounded,
  // sums in fp32 in member order, the result rounded); the exchange itself stays fp32 (it is the
  // parent's all_to_all), so these save no bytes.
  void reduce_scatter_bf16(const float* in, float* out, std::size_t chunk);
  void all_reduce_bf16(float* data, std::size_t n);

  // Floats of scratch a collective of these sizes needs (held between calls, so a step's
  // calls allocate only on first use): reduce_scatter / all_gather world*chunk, all_reduce
  // world*ceil16(n/world) + that.
  std::size_t scratch_floats() const { return scratch_.size() + pad_.size(); }

 private:
  void exchange(const float* in, float* out, std::size_t chunk);  // chunk to / from each member
  communicator& parent_;
  std::vector<int> members_;
  int me_ = 0;
  std::vector<std::size_t> send_, recv_;  // [parent world] all_to_all counts
  fbuffer scratch_, pad_, rounded_;
};

}  // namespace zf::comm
