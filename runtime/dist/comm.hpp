#pragma once
// The data plane: collectives over interchangeable backends (DESIGN.md, "Two planes").
//
// Invariants every backend keeps:
// - Collectives are blocking and must be entered by every rank of the group in the same order,
//   with the same sizes (and root); a communicator is used by one thread at a time.
// - Results are bit-identical on every rank and deterministic run to run: every reduced element
//   is computed once, by one rank, in a fixed order, and copied to the others. ZeRO stage 0 runs
//   the optimizer on every rank, so a one-ulp difference between ranks would be a divergence.
// - Sum order: `local` adds in rank order 0..N-1, so its reduce_scatter equals the matching slice
//   of its all_reduce bit for bit. `gloo` adds along its ring (fixed, but not rank order);
//   `nccl` in the order of the algorithm NCCL picks (ring, tree, NVLS: by size and topology,
//   fixed for one machine and NCCL version; each reduced element still reaches every rank as
//   the same bits).
// - Aliasing: all_reduce and broadcast are in place; reduce_scatter's `out` may be exactly
//   `in + rank*chunk` (in-place ZeRO gradient sharding); all_gather's `in` may be exactly
//   `out + rank*chunk`; all_to_all's `in` and `out` must not overlap. Any other overlap is
//   undefined.
// - all_to_all is the one collective whose sizes differ between ranks (MoE expert parallelism:
//   each rank sends each other rank the tokens routed to that rank's experts); the per-pair counts
//   must still agree (rank q's send[r] == rank r's recv[q]).
// - Byte accounting (`bytes_sent`) is the per-rank traffic a ring algorithm would send, the same
//   formula for every backend so that routes can be compared (see `ring_bytes`); it is counted
//   from the arguments, not measured on the wire. world 1 sends nothing. all_to_all is not a ring:
//   it counts what this rank sends to the others (`all_to_all_bytes`).
// Gloo is confined to comm_gloo.cpp and NCCL to comm_nccl.cpp: this header includes no
// third-party collective headers.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zf::comm {

enum class op { all_reduce, reduce_scatter, all_gather, broadcast, all_to_all };

std::string_view to_string(op o);

// Key-value rendezvous for process backends; actors/ will implement it over CAF (rank table on
// the control plane), tests use make_file_store.
struct kv_store {
  virtual ~kv_store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Blocks until `key` is set; zf::error on timeout naming the key.
  virtual std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

// One file per key in `dir` (created if missing), written to a temporary name and renamed, so a
// reader never sees half a value. Setting a key again replaces it. Keys may contain any byte
// (they are percent-encoded into file names). Works across processes of one host (or a shared
// file system with atomic rename).
std::shared_ptr<kv_store> make_file_store(const std::filesystem::path& dir);

class communicator {
 public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string backend() const = 0;

  // data: [n] on every rank -> [n] = elementwise sum over ranks (in place).
  virtual void all_reduce(float* data, std::size_t n) = 0;
  // Small scalars (loss, grad norm); same contract as the float overload.
  virtual void all_reduce(double* data, std::size_t n) = 0;
  // in: [world*chunk] on every rank -> out: [chunk] = sum over ranks of their in[rank*chunk,
  // +chunk).
  virtual void reduce_scatter(const float* in, float* out, std::size_t chunk) = 0;
  // in: [chunk] -> out: [world*chunk], block r = rank r's in. `in` may alias out + rank*chunk.
  virtual void all_gather(const float* in, float* out, std::size_t chunk) = 0;
  // data: [n]; afterwards every rank holds root's data.
  virtual void broadcast(float* data, std::size_t n, int root) = 0;
  // Uneven all-to-all. in: this rank's send buffer, send[r] floats for rank r back to back in
  // rank order (r = 0..world-1); out: recv[r] floats from rank r back to back in rank order. send
  // and recv have world entries each; send[r] on rank q must equal recv[q] on rank r. in and out
  // must not overlap. The part a rank sends to itself is copied locally. Zero counts (and all
  // zero) are fine; a buffer may be null when its counts sum to 0.
  // in: [sum(send)] -> out: [sum(recv)]
  // Not pure so that communicators written outside runtime/dist (test doubles) keep compiling;
  // this default throws zf::error naming the backend. Every backend here overrides it.
  virtual void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                          std::span<const std::size_t> recv);
  virtual void barrier() = 0;

  // Gradients in bf16 on the wire (train.reduce_dtype = bf16, DeepSpeed's
  // communication_data_type): the fp32 contracts of all_reduce and reduce_scatter, with each
  // rank's data rounded to bf16 (nearest even) before it is sent and the result a bf16 value
  // (held in the fp32 buffer), at half the bytes. How the sum rounds is the backend's: the
  // default (local threads, subgroups) sums the rounded inputs in fp32 in the fp32 collective's
  // order and rounds once; gloo sends bf16 along its ring, each partial sum rounded to bf16 (as
  // NCCL's bf16 sums). Either way deterministic and the same bits on every rank.
  virtual void all_reduce_bf16(float* data, std::size_t n);
  virtual void reduce_scatter_bf16(const float* in, float* out, std::size_t chunk);

  // Per-rank bytes this rank sent on the data plane since construction or reset_bytes(), by the
  // ring formulas of `ring_bytes`. Readable from any thread.
  std::uint64_t bytes_sent() const { return bytes_sent_.load(std::memory_order_relaxed); }
  void reset_bytes() { bytes_sent_.store(0, std::memory_order_relaxed); }

 protected:
  void add_bytes(std::uint64_t b) { bytes_sent_.fetch_add(b, std::memory_order_relaxed); }

 private:
  std::vector<float> bf16_scratch_;  // the default reduce_scatter_bf16's rounded input
  std::atomic<std::uint64_t> bytes_sent_{0};
};

// y[i] = x[i] rounded to its nearest bf16 value (ties to even), kept as fp32; y may be x. The
// bf16 collectives' rounding where they move fp32 (the defaults, subgroups).
void round_to_bf16(const float* x, float* y, std::size_t n);

// data: [n] broadcast from root in broadcasts of at most `bucket` floats (weights pushed to an
// engine in another process: bounded transient buffers on the wire, the same calls on every rank).
void broadcast_buckets(communicator& c, float* data, std::size_t n, std::size_t bucket, int root);

// Bytes that `rank` sends for one collective in a ring of `world` ranks, where `bytes` is the
// size of the whole message (see `message_bytes`). N = world, B = bytes:
//   all_reduce      floor(2*(N-1)*B / N)      (ring reduce-scatter + ring all-gather)
//   reduce_scatter  (N-1)*B/N = (N-1)*chunk*4  (B = in size = N*chunk*4)
//   all_gather      (N-1)*B/N = (N-1)*chunk*4  (B = out size = N*chunk*4)
//   broadcast       B for every rank except the one just before root in the ring
//                   ((root-1) mod N), which sends 0: a pipelined chain, (N-1)*B in total
//   all_to_all      (N-1)*B/N  (B = send buffer = N equal parts of B/N: the even split; an
//                   uneven call counts all_to_all_bytes instead, which equals this when even)
// barrier counts 0; world 1 counts 0.
std::uint64_t ring_bytes(op o, std::size_t bytes, int world, int rank, int root = 0);

// Bytes that `rank` sends in one all_to_all with send counts `send` (floats per destination):
//   sum over r != rank of send[r]*4
// (the part for itself is a local copy). What every backend adds to bytes_sent for all_to_all.
std::uint64_t all_to_all_bytes(std::span<const std::size_t> send, int rank);

// The message size the router matches `min_bytes` against: all_reduce n*sizeof(T),
// reduce_scatter and all_gather world*chunk*4 (the full buffer), broadcast n*4, all_to_all
// sum(send)*4 (this rank's whole send buffer; count = sum(send)). all_to_all's size differs
// between ranks, so a router table must not split all_to_all by size (make_router refuses it).
inline std::size_t message_bytes(op o, std::size_t count, std::size_t elem_size, int world) {
  return (o == op::reduce_scatter || o == op::all_gather)
             ? count * elem_size * static_cast<std::size_t>(world)
             : count * elem_size;
}

// N ranks that are threads of one process (shared memory). Returns one communicator per rank;
// each must be used by its own thread. Collectives are blocking for all ranks (like NCCL/Gloo).
// Pointers are exchanged through shared state and each rank reduces or copies its own slice, so
// the N threads share the work; nothing is heap-allocated per call. A size or root mismatch
// between ranks (for all_to_all: rank q's send[r] != rank r's recv[q]) throws zf::error on every
// rank (no rank is left waiting).
std::vector<std::unique_ptr<communicator>> make_local_group(int world);

struct gloo_options {
  // How long rendezvous (store waits, TCP connect) may take before the peer is declared missing.
  std::chrono::milliseconds rendezvous_timeout = std::chrono::seconds(30);
  // End-to-end limit of one collective (a peer may be busy computing for a while before it
  // enters; keep this generous). Past it the collective throws zf::error "comm gloo: rank R of
  // W: <op> did not complete within <limit> (a peer died or stopped...)" instead of waiting on a
  // dead or frozen peer; a peer whose connection closes fails it at once. Training sets it from
  // train.comm_timeout_s; the default suits weight pushes to an engine process (large, rare).
  std::chrono::milliseconds op_timeout = std::chrono::minutes(10);
  // The setting a user changes op_timeout with ("train.comm_timeout_s"), named in timeout
  // errors; empty: none named.
  std::string timeout_key;
};

// One rank of a process group over Gloo TCP; `prefix` namespaces the store keys so a store can be
// reused (use a fresh prefix per group: stale keys from an earlier group under the same prefix
// would be read as this group's addresses); `iface_addr` is the address to bind ("127.0.0.1" for
// one host). zf::error naming the missing rank and key when a peer does not show up in time.
// With world > 1 the process ignores SIGPIPE from then on (unless it has a handler for it): a
// write to a dead peer must fail the collective with a message, not kill the process.
// all_to_all checks what one rank can see (world entries, send[rank] == recv[rank], buffers) but
// not that the ranks' counts agree: that would cost a second exchange per call. Counts that
// disagree are a caller bug Gloo does not survive (a longer message than the receiver posted
// fails an assertion on Gloo's I/O thread, which aborts the process; a shorter one leaves the
// rest of that piece unwritten). MoE layers learn their recv counts from the other ranks' send
// counts (one even all_to_all of [world] counts per rank) before moving tokens.
std::unique_ptr<communicator> make_gloo(int rank, int world, std::shared_ptr<kv_store> store,
                                        const std::string& iface_addr, const std::string& prefix,
                                        const gloo_options& options = {});

struct nccl_options {
  // How long rendezvous may take: rank 0's NCCL unique id appearing in the store, then NCCL's
  // own init (every rank joining); past it make_nccl aborts and throws zf::error.
  std::chrono::milliseconds rendezvous_timeout = std::chrono::seconds(30);
  // End-to-end limit of one collective, as gloo_options::op_timeout: past it the communicator is
  // aborted (ncclCommAbort) and the collective throws zf::error "comm nccl: rank R of W: <op>
  // did not complete within <limit> (a peer died or stopped...)".
  std::chrono::milliseconds op_timeout = std::chrono::minutes(10);
  // The setting a user changes op_timeout with ("train.comm_timeout_s"), named in timeout
  // errors; empty: none named.
  std::string timeout_key;
};

// One rank of a process group over NCCL (one GPU per rank; NCCL refuses two ranks on one GPU).
// Buffers are GPU memory (kernels::gpu_alloc) on the communicator's GPU: the one current on the
// thread that called make_nccl, which the caller selects first (kernels::gpu_init); a host
// pointer or another GPU's memory throws zf::error before anything is sent.
// Rendezvous: rank 0 calls ncclGetUniqueId and publishes its 128 bytes under "<prefix>/nccl_id";
// the others read it (zf::error naming the key and rank 0 when it does not show up within
// rendezvous_timeout). As for make_gloo, use a fresh prefix per group: a stale id under the same
// prefix would be read as this group's and its init would time out.
// Streams: the collectives run on a non-blocking stream the communicator owns, which does not
// order against the caller's streams, so the caller's writes to a buffer must be complete
// (its stream synchronized, or an event waited on) before the call. The contract is blocking:
// each call returns after its stream has finished, the result in the buffer. Overlap with
// compute comes from running the communicator on its own thread (its stream beside the compute
// stream); an asynchronous API (enqueue, then wait on an event) is future work.
// Failures: a collective past op_timeout, or one NCCL reports failed (a peer died), aborts the
// communicator and throws zf::error naming rank, world and op (and the limit, or NCCL's error);
// every later call says the group was aborted. all_to_all checks what one rank can see, as
// make_gloo's does (counts that disagree between ranks are a caller bug NCCL does not detect; they
// time out or corrupt). bf16 collectives (all_reduce_bf16, reduce_scatter_bf16) throw zf::error:
// the base class's rounding runs on the host and cannot read GPU memory (train.reduce_dtype = fp32
// for now). In a build without CUDA (-DZF_CUDA=OFF) make_nccl throws zf::error saying so.
std::unique_ptr<communicator> make_nccl(int rank, int world, std::shared_ptr<kv_store> store,
                                        const std::string& prefix,
                                        const nccl_options& options = {});

// Per-operation, per-size backend choice (the MCR-DL idea): a table of {op, min_bytes, backend
// index}; the first matching row (same op, message_bytes >= min_bytes) wins; no match goes to
// backend 0, so the default (empty) table sends everything to backend 0. barrier goes to
// backend 0. The router owns its backends (all of the same rank/world); its bytes_sent is what
// the chosen backends counted. All ranks must pick the same backend for a collective, so an
// all_to_all row must have min_bytes 0: with uneven splits each rank sends a different amount,
// and a size threshold could send two ranks to different backends, where each would wait for the
// other forever (local) or until op_timeout (gloo). make_router throws zf::error on such a row.
struct route {
  op o;
  std::size_t min_bytes;
  int backend;
};
int pick_route(const std::vector<route>& table, op o, std::size_t bytes);
std::unique_ptr<communicator> make_router(std::vector<std::unique_ptr<communicator>> backends,
                                          std::vector<route> table = {});

}  // namespace zf::comm
