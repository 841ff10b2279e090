// The NCCL backend's host-side planning (nccl_plan.hpp): no NCCL, no CUDA, in every build.
#include "runtime/dist/nccl_plan.hpp"

#include <cstdint>

#include "runtime/core/error.hpp"

namespace zf::comm::nccl_plan {

void check_args(int rank, int world, const kv_store* store, const nccl_options& options) {
  if (world < 1) fail("comm nccl: world must be >= 1, got {}", world);
  if (rank < 0 || rank >= world)
    fail("comm nccl: rank {} out of range for world {} (expected 0..{})", rank, world, world - 1);
  if (!store) fail("comm nccl: rank {} of {}: no rendezvous store given", rank, world);
  if (options.rendezvous_timeout.count() <= 0 || options.op_timeout.count() <= 0)
    fail("comm nccl: timeouts must be positive, got rendezvous {} ms, op {} ms",
         options.rendezvous_timeout.count(), options.op_timeout.count());
}

std::string unique_id_key(const std::string& prefix) {
  return prefix + "/nccl_id";
}

std::vector<char> exchange_unique_id(kv_store& store, int rank, int world,
                                     const std::string& prefix,
                                     const std::function<std::vector<char>()>& make_id,
                                     std::chrono::milliseconds timeout) {
  const std::string key = unique_id_key(prefix);
  if (rank == 0) {
    std::vector<char> id = make_id();
    if (id.size() != unique_id_bytes)
      fail("comm nccl: rank 0 of {}: the NCCL unique id has {} bytes, expected {}", world,
           id.size(), unique_id_bytes);
    store.set(key, id);
    return id;
  }
  std::vector<char> id;
  try {
    id = store.get(key, timeout);
  } catch (const zf::error& e) {
    fail(
        "comm nccl: rank {} of {} gave up after {} ms waiting for rank 0's NCCL unique id (store "
        "key '{}'); did rank 0 start, with the same world and prefix, and find its GPU? ({})",
        rank, world, timeout.count(), key, e.what());
  }
  if (id.size() != unique_id_bytes)
    fail(
        "comm nccl: rank {} of {}: store key '{}' holds {} bytes, expected a {}-byte NCCL unique "
        "id (is another program using prefix '{}'?)",
        rank, world, key, id.size(), unique_id_bytes, prefix);
  return id;
}

void plan_all_to_all(std::string_view backend, int rank, int world,
                     std::span<const std::size_t> send, std::span<const std::size_t> recv,
                     const void* in, const void* out, all_to_all_plan& plan) {
  const auto w = static_cast<std::size_t>(world);
  const auto me = static_cast<std::size_t>(rank);
  if (send.size() != w || recv.size() != w)
    fail(
        "comm {} (rank {} of {}): all_to_all with {} send and {} recv counts, expected {} each "
        "(one per rank)",
        backend, rank, world, send.size(), recv.size(), w);
  if (send[me] != recv[me])
    fail("comm {} (rank {} of {}): all_to_all sends {} floats to itself but expects {} from itself",
         backend, rank, world, send[me], recv[me]);
  plan.send_off.resize(w);
  plan.recv_off.resize(w);
  std::size_t n_in = 0, n_out = 0;
  for (std::size_t r = 0; r < w; ++r) {
    plan.send_off[r] = n_in;
    plan.recv_off[r] = n_out;
    n_in += send[r];
    n_out += recv[r];
  }
  plan.n_in = n_in;
  plan.n_out = n_out;
  if ((n_in && !in) || (n_out && !out))
    fail("comm {} (rank {} of {}): all_to_all of {} floats in, {} out with a null buffer", backend,
         rank, world, n_in, n_out);
  const auto in_lo = reinterpret_cast<std::uintptr_t>(in);
  const auto out_lo = reinterpret_cast<std::uintptr_t>(out);
  if (n_in && n_out && in_lo < out_lo + n_out * sizeof(float) &&
      out_lo < in_lo + n_in * sizeof(float))
    fail("comm {} (rank {} of {}): all_to_all with overlapping in and out buffers", backend, rank,
         world);
}

std::string duration_text(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? fmt::format("{} s", d.count() / 1000)
                               : fmt::format("{} ms", d.count());
}

std::string timeout_message(int rank, int world, std::string_view what,
                            std::chrono::milliseconds limit, const std::string& key) {
  return fmt::format(
      "comm nccl: rank {} of {}: {} did not complete within {} (a peer died or stopped{}); the "
      "communicator was aborted",
      rank, world, what, duration_text(limit), key.empty() ? "" : "; limit set by " + key);
}

std::string init_timeout_message(int rank, int world, std::chrono::milliseconds limit,
                                 const std::string& prefix) {
  return fmt::format(
      "comm nccl: rank {} of {}: NCCL init did not complete within {} (did every rank start, each "
      "on its own GPU, with the same world and prefix '{}'?); the communicator was aborted",
      rank, world, duration_text(limit), prefix);
}

}  // namespace zf::comm::nccl_plan
