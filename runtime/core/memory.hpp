#pragma once
// How much memory this machine lets us use, for the checks that refuse a run whose sizes cannot
// fit before anything is allocated or written (a std::bad_alloc names no key, and an
// over-committed allocation ends in an out-of-memory kill instead).
#include <cstdint>
#include <string>

namespace zf {

// Physical memory, or the cgroup's limit where that is lower (a container's share).
std::uint64_t machine_memory_bytes();

// Bytes for messages: "512 B", "1.5 GiB", "3.25 TiB".
std::string bytes_text(double bytes);

}  // namespace zf
