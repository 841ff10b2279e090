// Byte-pair merging (see bpe_merge.hpp for the rule both versions follow).
#include "runtime/text/bpe_merge.hpp"

#include <algorithm>
#include <functional>

namespace zf::bpe {

void bpe_merge_scan(std::vector<int>& parts, const lookup_fn& lookup, scratch& s) {
  if (parts.size() < 2) return;
  auto& ranks = s.ranks;  // ranks[i]: rank of merging parts[i] and parts[i + 1]
  ranks.resize(parts.size() - 1);
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) ranks[i] = lookup(parts[i], parts[i + 1]).rank;
  while (parts.size() > 1) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < ranks.size(); ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == INT_MAX) break;
    parts[best] = lookup(parts[best], parts[best + 1]).id;
    parts.erase(parts.begin() + std::ptrdiff_t(best) + 1);
    ranks.erase(ranks.begin() + std::ptrdiff_t(best));
    if (best > 0) ranks[best - 1] = lookup(parts[best - 1], parts[best]).rank;
    if (best + 1 < parts.size()) ranks[best] = lookup(parts[best], parts[best + 1]).rank;
  }
}

// Nodes are the initial positions 0..n-1 in a doubly linked list; a merge keeps the left node
// (its position orders ties: leftmost first) and unlinks the right one. A heap entry names its
// left node and that node's version when pushed; any change of the node (a merge into it or
// of its right neighbour) bumps the version, so stale entries are recognised and skipped.
void bpe_merge_heap(std::vector<int>& parts, const lookup_fn& lookup, scratch& s) {
  const int n = static_cast<int>(parts.size());
  if (n < 2) return;
  auto &prev = s.prev, &next = s.next, &version = s.version;
  auto& heap = s.heap;
  prev.resize(n), next.resize(n), version.assign(n, 0);
  for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  heap.clear();
  const auto greater = std::greater<std::pair<long long, long long>>();
  auto push = [&](int left) {
    const int right = next[left];
    if (right < 0) return;
    const int rank = lookup(parts[left], parts[right]).rank;
    if (rank == INT_MAX) return;
    heap.emplace_back((static_cast<long long>(rank) << 32) | left, version[left]);
    std::push_heap(heap.begin(), heap.end(), greater);
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const auto [key, ver] = heap.back();
    heap.pop_back();
    const int left = static_cast<int>(key & 0xffffffffLL);
    if (ver != version[left] || next[left] < 0) continue;  // stale: the pair changed since
    const int right = next[left];
    parts[left] = lookup(parts[left], parts[right]).id;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    next[right] = -1;
    ++version[left];
    ++version[right];
    push(left);               // (merged, its right neighbour)
    if (prev[left] >= 0) {    // (left neighbour, merged): the old pair with
      ++version[prev[left]];  // the left neighbour is stale now
      push(prev[left]);
    }
  }
  int out = 0;
  for (int i = 0; i >= 0; i = next[i]) parts[out++] = parts[i];
  parts.resize(out);
}

}  // namespace zf::bpe
