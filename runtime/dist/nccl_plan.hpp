#pragma once
// The host-side half of the NCCL backend (comm_nccl.cpp): argument checks, the unique-id
// rendezvous over a kv_store, all_to_all's offsets, the bounded wait and the timeout text. None of
// it touches NCCL or CUDA, so it is compiled in every build and tested on machines without a GPU
// (tests/runtime/test_comm_nccl.cpp); comm_nccl.cpp supplies the NCCL calls.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "runtime/dist/comm.hpp"

namespace zf::comm::nccl_plan {

// sizeof(ncclUniqueId) (NCCL_UNIQUE_ID_BYTES in nccl.h; comm_nccl.cpp checks they agree).
constexpr std::size_t unique_id_bytes = 128;

// ncclGetUniqueId's bytes (unique_id_bytes of them): what rank 0 publishes. Defined by
// comm_nccl.cpp (needs no GPU); zf::error in a build without CUDA (comm_nccl_off.cpp).
std::vector<char> new_unique_id();

// zf::error unless 0 <= rank < world, store is set and both timeouts are positive.
void check_args(int rank, int world, const kv_store* store, const nccl_options& options);

// "<prefix>/nccl_id": where rank 0 publishes the group's unique id.
std::string unique_id_key(const std::string& prefix);

// Rank 0: make_id() (ncclGetUniqueId's bytes, unique_id_bytes of them) is published under
// unique_id_key(prefix) and returned. Other ranks: waits up to `timeout` for that key and returns
// its bytes. zf::error naming the key and rank 0 when it does not appear in time, or when the
// value is not unique_id_bytes long (another program's key, or a truncated write).
std::vector<char> exchange_unique_id(kv_store& store, int rank, int world,
                                     const std::string& prefix,
                                     const std::function<std::vector<char>()>& make_id,
                                     std::chrono::milliseconds timeout);

// Where each rank's piece starts in this rank's all_to_all buffers.
struct all_to_all_plan {
  std::size_t n_in = 0;               // floats in `in`: sum(send)
  std::size_t n_out = 0;              // floats in `out`: sum(recv)
  std::vector<std::size_t> send_off;  // [world]: rank r's piece is in[send_off[r], +send[r])
  std::vector<std::size_t> recv_off;  // [world]: rank r's piece is out[recv_off[r], +recv[r])
};

// Checks what one rank can see of an all_to_all (world entries each, send[rank] == recv[rank], no
// null buffer with a nonzero total, in and out disjoint) and fills `plan` (its vectors are reused,
// so a communicator keeps one plan and allocates nothing per call once they have grown).
// zf::error "comm <backend> (rank R of W): ..." otherwise. Pointers are only compared, never read.
void plan_all_to_all(std::string_view backend, int rank, int world,
                     std::span<const std::size_t> send, std::span<const std::size_t> recv,
                     const void* in, const void* out, all_to_all_plan& plan);

// "60 s" for whole seconds, else "1500 ms".
std::string duration_text(std::chrono::milliseconds d);

// The message of a collective (or init) that did not finish within `limit`: "comm nccl: rank R of
// W: <what> did not complete within <limit> (a peer died or stopped; limit set by <key>); the
// communicator was aborted". `key` empty: no key named.
std::string timeout_message(int rank, int world, std::string_view what,
                            std::chrono::milliseconds limit, const std::string& key);

// NCCL's init (every rank of the group connecting) past the rendezvous limit: "comm nccl: rank R
// of W: NCCL init did not complete within <limit> (did every rank start, each on its own GPU,
// with the same world and prefix '<prefix>'?); the communicator was aborted".
std::string init_timeout_message(int rank, int world, std::chrono::milliseconds limit,
                                 const std::string& prefix);

// Calls done() until it returns true (-> true) or `limit` has passed (-> false); done() may throw,
// which ends the wait. Spins for the first ~50 us (a small collective finishes within that), then
// sleeps between polls, doubling from 10 us to 1 ms, so a long wait costs little CPU and a late
// completion is seen within ~1 ms. done() is called at least once, even with a zero limit.
template <class F>
bool poll_until(F&& done, std::chrono::milliseconds limit) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + limit;
  auto pause = std::chrono::microseconds(10);
  for (;;) {
    if (done()) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    if (now - start < std::chrono::microseconds(50)) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

}  // namespace zf::comm::nccl_plan
