// Byte-pair merging (runtime/text/bpe_merge): the heap version gives the scan version's tokens
// (lowest rank first, leftmost on ties) on random merge tables and words, including long runs
// of one byte; and a one-word prompt of 300 KB encodes through the real tokenizer (it took
// 24 s with the scan alone, issue 9).
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>

#include "runtime/text/bpe_merge.hpp"
#include "runtime/text/tokenizer.hpp"

namespace {

// A random merge table over ids 0..alphabet-1: merge k joins two existing ids into id
// alphabet + k (so, as in trained BPE, a merged id only takes part in later merges).
struct table {
  std::map<std::pair<int, int>, zf::bpe::merge_result> merges;
  table(int alphabet, int count, uint32_t seed) {
    std::mt19937 rng(seed);
    int next = alphabet;
    for (int k = 0; k < count; ++k) {
      const int a = int(rng() % uint32_t(next)), b = int(rng() % uint32_t(next));
      if (merges.emplace(std::pair{a, b}, zf::bpe::merge_result{k, next}).second) ++next;
    }
  }
  zf::bpe::lookup_fn fn() const {
    return [this](int a, int b) {
      auto it = merges.find({a, b});
      return it == merges.end() ? zf::bpe::merge_result{} : it->second;
    };
  }
};

}  // namespace

TEST_CASE("bpe: the heap merge equals the scan merge on random tables and words") {
  zf::bpe::scratch s1, s2;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    const int alphabet = 2 + int(seed % 5);
    const table t(alphabet, 60 + int(seed % 7) * 20, seed);
    std::mt19937 rng(seed * 7919);
    for (int w = 0; w < 20; ++w) {
      const std::size_t len = 1 + rng() % (w < 10 ? 40 : 400);
      std::vector<int> word(len);
      const bool run = w % 4 == 0;  // long runs of one id: every pair ties
      for (auto& x : word) x = run ? 0 : int(rng() % uint32_t(alphabet));
      auto a = word, b = word;
      zf::bpe::bpe_merge_scan(a, t.fn(), s1);
      zf::bpe::bpe_merge_heap(b, t.fn(), s2);
      CAPTURE(seed);
      CAPTURE(w);
      CHECK(a == b);
    }
  }
}

TEST_CASE("bpe: a 300 KB one-word prompt encodes, and its tokens decode back") {
  const zf::tokenizer tok = zf::tokenizer::load_gpt2(ZF_DATA_DIR "/gpt2");
  const std::string word(300000, 'a');
  const auto ids = tok.encode(word);
  CHECK(ids.size() < word.size() / 2);  // merged, not left as bytes
  CHECK(tok.decode(ids) == word);
}
