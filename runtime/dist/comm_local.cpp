// `local` backend: N ranks that are threads of one process, sharing memory.
//
// Every collective is two phases around a std::barrier:
//   1. each rank publishes its call (kind, count, root, pointers) in its own slot; barrier;
//      every rank checks all slots (same verdict everywhere, so a mismatch throws on all ranks);
//   2. each rank does its share of the work reading the others' buffers through the slots;
//      barrier (nobody may reuse its buffer or slot while another rank still reads it).
// Work split: all_reduce cuts the buffer into N cache-line-aligned slices and rank r sums slice r
// over all ranks (rank order 0..N-1, through a stack block) and writes the sum into every rank's
// buffer, so each element is added once and copied N times; reduce_scatter: rank r sums its own
// chunk (same order, so it equals the matching all_reduce slice bit for bit); all_gather,
// broadcast and all_to_all: every rank pulls into its own output (all_to_all: rank r copies
// piece r of every rank's send buffer, the slots carrying each rank's count arrays, which phase 1
// checks pair by pair). No heap allocation per call (error messages aside): the group state is
// allocated once by make_local_group.
#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <string>

#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"

namespace zf::comm {
namespace {

enum class kind : int {
  all_reduce_f32,
  all_reduce_f64,
  reduce_scatter,
  all_gather,
  broadcast,
  all_to_all,
  barrier
};

std::string_view kind_name(kind k) {
  switch (k) {
    case kind::all_reduce_f32:
      return "all_reduce(float)";
    case kind::all_reduce_f64:
      return "all_reduce(double)";
    case kind::reduce_scatter:
      return "reduce_scatter";
    case kind::all_gather:
      return "all_gather";
    case kind::broadcast:
      return "broadcast";
    case kind::all_to_all:
      return "all_to_all";
    case kind::barrier:
      return "barrier";
  }
  return "?";
}

// One rank's published call; own cache line so publishing does not bounce the others' lines.
struct alignas(64) call_slot {
  kind k = kind::barrier;
  std::size_t count = 0;
  int root = 0;
  const void* in = nullptr;
  void* out = nullptr;
  // all_to_all only (count stays 0): the caller's count arrays, alive until it leaves the call.
  const std::size_t* send = nullptr;
  const std::size_t* recv = nullptr;
  std::size_t send_n = 0, recv_n = 0;
};

std::size_t sum_of(const std::size_t* counts, std::size_t n) {
  return std::accumulate(counts, counts + n, std::size_t{0});
}

// What is wrong with rank r's all_to_all arguments on their own; empty if nothing.
std::string all_to_all_args_problem(const call_slot& s, std::size_t r, std::size_t world) {
  if (s.send_n != world || s.recv_n != world)
    return fmt::format(
        "comm local: rank {} called all_to_all with {} send and {} recv counts, expected {} each "
        "(one per rank)",
        r, s.send_n, s.recv_n, world);
  const std::size_t n_in = sum_of(s.send, world), n_out = sum_of(s.recv, world);
  if ((n_in && !s.in) || (n_out && !s.out))
    return fmt::format(
        "comm local: rank {} called all_to_all of {} floats in, {} out with a null buffer", r, n_in,
        n_out);
  // Each rank reads the others' `in` while they write their `out`: an overlap would be a race.
  const auto in_lo = reinterpret_cast<std::uintptr_t>(s.in);
  const auto out_lo = reinterpret_cast<std::uintptr_t>(s.out);
  if (n_in && n_out && in_lo < out_lo + n_out * sizeof(float) &&
      out_lo < in_lo + n_in * sizeof(float))
    return fmt::format("comm local: rank {} called all_to_all with overlapping in and out buffers",
                       r);
  return {};
}

// The first problem with one all_to_all whose calls are `slots` (slot r = rank r's), looked for
// in a fixed order so that every rank reports the same one; empty if none. Allocates only when
// something is wrong.
std::string all_to_all_problem(std::span<const call_slot> slots) {
  const std::size_t w = slots.size();
  for (std::size_t r = 0; r < w; ++r) {
    std::string p = all_to_all_args_problem(slots[r], r, w);
    if (!p.empty()) return p;
  }
  for (std::size_t q = 0; q < w; ++q)
    for (std::size_t r = 0; r < w; ++r)
      if (slots[q].send[r] != slots[r].recv[q])
        return fmt::format(
            "comm local: all_to_all counts disagree: rank {} sends {} floats to rank {}, but rank "
            "{} expects {} from rank {}",
            q, slots[q].send[r], r, r, slots[r].recv[q], q);
  return {};
}

struct group_state {
  explicit group_state(int world)
      : world(world), sync(world), slots(static_cast<std::size_t>(world)) {}
  const int world;
  std::barrier<> sync;
  std::vector<call_slot> slots;  // slot r is written only by rank r, only outside phase 2
};

// Elements per reduction block: 8 KiB of floats on the stack, L1-resident.
constexpr std::size_t block_bytes = 8192;

class local_comm final : public communicator {
 public:
  local_comm(std::shared_ptr<group_state> g, int rank) : g_(std::move(g)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world() const override { return g_->world; }
  std::string backend() const override { return "local"; }

  void all_reduce(float* data, std::size_t n) override {
    all_reduce_impl(kind::all_reduce_f32, data, n);
  }
  void all_reduce(double* data, std::size_t n) override {
    all_reduce_impl(kind::all_reduce_f64, data, n);
  }

  // in: [world*chunk] -> out: [chunk]
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    const int w = g_->world;
    if (w == 1) {
      check_ptrs(kind::reduce_scatter, chunk, in, out);
      if (chunk && in != out) std::memmove(out, in, chunk * sizeof(float));
      return;
    }
    enter({kind::reduce_scatter, chunk, 0, in, out});
    const std::size_t base = static_cast<std::size_t>(rank_) * chunk;
    sum_over_ranks<float>(base, base + chunk, [&](std::size_t lo, const float* sum, std::size_t m) {
      std::memcpy(out + (lo - base), sum, m * sizeof(float));
    });
    leave(op::reduce_scatter, static_cast<std::size_t>(w) * chunk * sizeof(float));
  }

  // in: [chunk] -> out: [world*chunk]
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    const int w = g_->world;
    if (w == 1) {
      check_ptrs(kind::all_gather, chunk, in, out);
      if (chunk && in != out) std::memmove(out, in, chunk * sizeof(float));
      return;
    }
    enter({kind::all_gather, chunk, 0, in, out});
    for (int k = 0; k < w; ++k) {
      const auto* src = static_cast<const float*>(g_->slots[static_cast<std::size_t>(k)].in);
      float* dst = out + static_cast<std::size_t>(k) * chunk;
      if (chunk && src != dst) std::memcpy(dst, src, chunk * sizeof(float));
    }
    leave(op::all_gather, static_cast<std::size_t>(w) * chunk * sizeof(float));
  }

  // data: [n]
  void broadcast(float* data, std::size_t n, int root) override {
    const int w = g_->world;
    if (w == 1) {
      check_ptrs(kind::broadcast, n, data, data);
      if (root != 0) fail("comm local: broadcast root {} out of range for world 1", root);
      return;
    }
    enter({kind::broadcast, n, root, data, data});
    const auto* src = static_cast<const float*>(g_->slots[static_cast<std::size_t>(root)].out);
    if (rank_ != root && n && src != data) std::memcpy(data, src, n * sizeof(float));
    leave(op::broadcast, n * sizeof(float), root);
  }

  // in: [sum(send)] -> out: [sum(recv)]
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    const call_slot mine{.k = kind::all_to_all,
                         .in = in,
                         .out = out,
                         .send = send.data(),
                         .recv = recv.data(),
                         .send_n = send.size(),
                         .recv_n = recv.size()};
    if (g_->world == 1) {
      const std::string problem = all_to_all_problem({&mine, 1});
      if (!problem.empty()) throw zf::error(problem);
      if (send[0]) std::memcpy(out, in, send[0] * sizeof(float));
      return;
    }
    enter(mine);
    // Piece `me` of every rank's send buffer, in rank order, is this rank's output; phase 1
    // checked that rank q's send[me] is our recv[q].
    const std::size_t me = static_cast<std::size_t>(rank_);
    float* dst = out;
    for (const call_slot& s : g_->slots) {
      const std::size_t m = s.send[me];
      if (m)
        std::memcpy(dst, static_cast<const float*>(s.in) + sum_of(s.send, me), m * sizeof(float));
      dst += m;
    }
    leave_counted(all_to_all_bytes(send, rank_));
  }

  void barrier() override {
    if (g_->world == 1) return;
    enter({kind::barrier, 0, 0, nullptr, nullptr});
    g_->sync.arrive_and_wait();
  }

 private:
  template <class T>
  void all_reduce_impl(kind k, T* data, std::size_t n) {
    const int w = g_->world;
    if (w == 1) {
      check_ptrs(k, n, data, data);
      return;
    }
    enter({k, n, 0, data, data});
    // Slice boundaries on 64-byte multiples so two ranks never write one cache line.
    constexpr std::size_t align = 64 / sizeof(T);
    const std::size_t ceil_share =
        (n + static_cast<std::size_t>(w) - 1) / static_cast<std::size_t>(w);
    const std::size_t per = (ceil_share + align - 1) / align * align;
    const std::size_t lo = std::min(n, static_cast<std::size_t>(rank_) * per);
    const std::size_t hi = std::min(n, lo + per);
    sum_over_ranks<T>(lo, hi, [&](std::size_t at, const T* sum, std::size_t m) {
      for (int r = 0; r < w; ++r)
        std::memcpy(static_cast<T*>(g_->slots[static_cast<std::size_t>(r)].out) + at, sum,
                    m * sizeof(T));
    });
    leave(op::all_reduce, n * sizeof(T));
  }

  // For [lo, hi) of every rank's published input (slot.in), computes in[0] + in[1] + ... +
  // in[N-1] (this order, so the bits do not depend on who computes) one stack block at a time
  // and hands each block to emit(offset, sum, count).
  template <class T, class Emit>
  void sum_over_ranks(std::size_t lo, std::size_t hi, Emit&& emit) const {
    constexpr std::size_t m_max = block_bytes / sizeof(T);
    alignas(64) T acc[m_max];
    const int w = g_->world;
    for (std::size_t at = lo; at < hi; at += m_max) {
      const std::size_t m = std::min(m_max, hi - at);
      const T* a = static_cast<const T*>(g_->slots[0].in) + at;
      const T* b = static_cast<const T*>(g_->slots[1].in) + at;
      for (std::size_t i = 0; i < m; ++i) acc[i] = a[i] + b[i];
      for (int r = 2; r < w; ++r) {
        const T* c = static_cast<const T*>(g_->slots[static_cast<std::size_t>(r)].in) + at;
        for (std::size_t i = 0; i < m; ++i) acc[i] += c[i];
      }
      emit(at, acc, m);
    }
  }

  void check_ptrs(kind k, std::size_t count, const void* in, const void* out) const {
    if (count && (!in || !out))
      fail("comm local (rank {} of {}): {} of {} elements with a null buffer", rank_, g_->world,
           kind_name(k), count);
  }

  // Phase 1: publish, meet, and check that every rank entered the same collective. Every rank
  // reads the same slots, so every rank reaches the same verdict; on a mismatch all of them pass
  // the second barrier (no slot is rewritten while someone still reads it) and throw.
  void enter(const call_slot& mine) {
    auto& slots = g_->slots;
    slots[static_cast<std::size_t>(rank_)] = mine;
    g_->sync.arrive_and_wait();
    const call_slot& s0 = slots[0];
    for (int r = 0; r < g_->world; ++r) {
      const call_slot& s = slots[static_cast<std::size_t>(r)];
      const bool null_buffer = s.count && (!s.in || !s.out);
      const bool bad_root = s.k == kind::broadcast && (s.root < 0 || s.root >= g_->world);
      if (s.k != s0.k || s.count != s0.count || s.root != s0.root || null_buffer || bad_root) {
        g_->sync.arrive_and_wait();
        if (null_buffer)
          fail("comm local: rank {} called {} of {} elements with a null buffer", r, kind_name(s.k),
               s.count);
        if (bad_root)
          fail("comm local: rank {} called broadcast with root {}, expected 0..{}", r, s.root,
               g_->world - 1);
        fail(
            "comm local: ranks disagree on the collective: rank 0 called {}(count {}, root {}), "
            "rank {} called {}(count {}, root {})",
            kind_name(s0.k), s0.count, s0.root, r, kind_name(s.k), s.count, s.root);
      }
    }
    if (s0.k == kind::all_to_all) {
      // The message is formatted before the second barrier: past it a rank may return and its
      // count arrays (which the message quotes) go away.
      const std::string problem = all_to_all_problem(slots);
      if (!problem.empty()) {
        g_->sync.arrive_and_wait();
        throw zf::error(problem);
      }
    }
  }

  // Phase 2 done: wait until every rank finished reading our buffer, then account.
  void leave(op o, std::size_t bytes, int root = 0) {
    leave_counted(ring_bytes(o, bytes, g_->world, rank_, root));
  }
  void leave_counted(std::uint64_t sent) {
    g_->sync.arrive_and_wait();
    add_bytes(sent);
  }

  std::shared_ptr<group_state> g_;
  const int rank_;
};

}  // namespace

std::vector<std::unique_ptr<communicator>> make_local_group(int world) {
  if (world < 1) fail("comm local: world must be >= 1, got {}", world);
  auto g = std::make_shared<group_state>(world);
  std::vector<std::unique_ptr<communicator>> out;
  out.reserve(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) out.push_back(std::make_unique<local_comm>(g, r));
  return out;
}

}  // namespace zf::comm
