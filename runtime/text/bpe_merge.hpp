#pragma once
// Byte-pair merging of one pre-token, as GPT-2's encoder.py and Hugging Face's BPE do it:
// repeatedly merge the adjacent pair with the lowest merge rank, the leftmost one on ties,
// until no adjacent pair has a merge. Two implementations with one result:
//   bpe_merge_scan: a scan for the best pair per merge, O(n^2) (fast for the short pieces of
//                   ordinary text, where n is a handful of bytes);
//   bpe_merge_heap: a min-heap of (rank, position) over a linked list of parts with stale
//                   entries skipped, O(n log n): a prompt that is one long word ("a" * 300000)
//                   encodes in milliseconds instead of minutes (issue 9).
// bpe_merge picks by length. lookup(a, b) gives {rank, merged id} of the pair, or rank INT_MAX
// when a and b do not merge. parts: the piece's initial ids in, its tokens out.
#include <climits>
#include <cstddef>
#include <functional>
#include <utility>
#include <vector>

namespace zf::bpe {

struct merge_result {
  int rank = INT_MAX;  // INT_MAX: no merge
  int id = -1;
};
using lookup_fn = std::function<merge_result(int left, int right)>;

// Scratch reused across calls (one per tokenizer object): no allocation per word once grown.
struct scratch {
  std::vector<int> ranks, prev, next, version;
  std::vector<std::pair<long long, long long>> heap;  // (rank << 32 | position, version key)
};

void bpe_merge_scan(std::vector<int>& parts, const lookup_fn& lookup, scratch& s);
void bpe_merge_heap(std::vector<int>& parts, const lookup_fn& lookup, scratch& s);
inline constexpr std::size_t k_heap_from = 64;  // parts at which the heap wins (measured)
inline void bpe_merge(std::vector<int>& parts, const lookup_fn& lookup, scratch& s) {
  if (parts.size() < k_heap_from)
    bpe_merge_scan(parts, lookup, s);
  else
    bpe_merge_heap(parts, lookup, s);
}

}  // namespace zf::bpe
