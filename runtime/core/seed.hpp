#pragma once
// SplitMix64 (Steele, Lea and Flood 2014): one well-mixed 64-bit value from another. Derives
// independent RNG seeds from (seed, step, row...) tuples, identically on every platform.
#include <cstdint>

namespace zf {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace zf
