#include "runtime/dist/subgroup.hpp"

#include <algorithm>

#include "kernels/activation.hpp"
#include "runtime/core/error.hpp"

namespace zf::comm {

subgroup::subgroup(communicator& parent, std::vector<int> members)
    : parent_(parent), members_(std::move(members)) {
  const int W = parent.world();
  if (members_.empty()) fail("comm subgroup: no members");
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (members_[i] < 0 || members_[i] >= W || (i && members_[i] <= members_[i - 1]))
      fail("comm subgroup: members must be ascending ranks of the {} (got rank {} at {})", W,
           members_[i], i);
  auto it = std::find(members_.begin(), members_.end(), parent.rank());
  if (it == members_.end()) fail("comm subgroup: rank {} is not among its members", parent.rank());
  me_ = static_cast<int>(it - members_.begin());
  send_.assign(std::size_t(W), 0);
  recv_.assign(std::size_t(W), 0);
}

// in: [world*chunk], block i for member i -> out: [world*chunk], block i from member i.
void subgroup::exchange(const float* in, float* out, std::size_t chunk) {
  for (int m : members_) send_[std::size_t(m)] = recv_[std::size_t(m)] = chunk;
  parent_.all_to_all(in, send_, out, recv_);
}

void subgroup::reduce_scatter(const float* in, float* out, std::size_t chunk) {
  const std::size_t n = std::size_t(world()) * chunk;
  if (scratch_.size() < n) scratch_.resize(n);
  exchange(in, scratch_.data(), chunk);
  // member order: out = block 0 + block 1 + ... (out may alias in: in was read by the exchange)
  std::copy_n(scratch_.data(), chunk, out);
  for (int i = 1; i < world(); ++i)
    kernels::accumulate(out, scratch_.data() + std::size_t(i) * chunk, chunk);
}

void subgroup::all_gather(const float* in, float* out, std::size_t chunk) {
  const std::size_t n = std::size_t(world()) * chunk;
  if (scratch_.size() < n) scratch_.resize(n);
  for (int i = 0; i < world(); ++i)
    std::copy_n(in, chunk, scratch_.data() + std::size_t(i) * chunk);
  exchange(scratch_.data(), out, chunk);
}

void subgroup::all_reduce(float* data, std::size_t n) {
  const std::size_t w = std::size_t(world()), chunk = ((n + w - 1) / w + 15) / 16 * 16;
  if (pad_.size() < w * chunk + chunk) pad_.resize(w * chunk + chunk);
  float* padded = pad_.data();
  std::copy_n(data, n, padded);
  std::fill(padded + n, padded + w * chunk, 0.0f);
  reduce_scatter(padded, padded + w * chunk, chunk);
  all_gather(padded + w * chunk, padded, chunk);
  std::copy_n(padded, n, data);
}

void subgroup::reduce_scatter_bf16(const float* in, float* out, std::size_t chunk) {
  const std::size_t n = std::size_t(world()) * chunk;
  if (rounded_.size() < n) rounded_.resize(n);
  round_to_bf16(in, rounded_.data(), n);  // out may be in + rank*chunk: in is read first
  reduce_scatter(rounded_.data(), out, chunk);
  round_to_bf16(out, out, chunk);
}

void subgroup::all_reduce_bf16(float* data, std::size_t n) {
  round_to_bf16(data, data, n);
  all_reduce(data, n);
  round_to_bf16(data, data, n);
}

}  // namespace zf::comm
