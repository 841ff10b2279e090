// `nccl` backend: one rank of a process group over NCCL, one GPU per rank, buffers in GPU memory.
// Compiled only with -DZF_CUDA=ON (comm_nccl_off.cpp stands in otherwise); the host-side planning
// it calls (argument checks, the unique-id rendezvous, all_to_all offsets, the bounded wait, the
// timeout text) is nccl_plan.cpp, tested without a GPU.
//
// Rendezvous: rank 0 publishes ncclGetUniqueId's 128 bytes under "<prefix>/nccl_id"; every rank
// then calls ncclCommInitRankConfig on its current GPU (the caller's cudaSetDevice: gpu_init).
//
// Non-blocking communicator (ncclConfig_t::blocking = 0): NCCL calls return at once (maybe with
// ncclInProgress) and this file waits itself, polling ncclCommGetAsyncError (NCCL's own state:
// init, enqueueing, a peer's failure) and then cudaStreamQuery (the GPU work), so that init and
// every collective are bounded: past nccl_options::rendezvous_timeout (init) or op_timeout (a
// collective) the communicator is aborted (ncclCommAbort stops the kernels still waiting for a
// dead peer) and zf::error names rank, world, op and limit. A blocking communicator would sit
// inside NCCL's call, or in cudaStreamSynchronize, for as long as a dead peer stays dead.
//
// Which NCCL call does what (NCCL 2.28):
//   all_reduce      ncclAllReduce (float: ncclFloat, double: ncclDouble), ncclSum, in place
//   reduce_scatter  ncclReduceScatter; in place when out == in + rank*chunk (NCCL's own rule)
//   all_gather      ncclAllGather; in place when in == out + rank*chunk (NCCL's own rule)
//   broadcast       ncclBroadcast, in place
//   all_to_all      the own piece with cudaMemcpyAsync, then one ncclGroupStart/End holding an
//                   ncclSend and an ncclRecv per peer with a nonzero count (a zero count is
//                   skipped on both sides: the counts agree pairwise by contract)
//   barrier         a 1-float ncclAllReduce on a device scratch allocated once
// Everything runs on one non-blocking stream the communicator owns; each call waits for it
// (comm.hpp: the contract is blocking; overlap comes from a communication thread).
// Nothing is allocated per call (all_to_all's offset tables are kept and grow).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/dist/nccl_plan.hpp"

namespace zf::comm {
namespace {

using std::chrono::milliseconds;
namespace plan = nccl_plan;

static_assert(sizeof(ncclUniqueId) == plan::unique_id_bytes,
              "nccl_plan::unique_id_bytes must match NCCL_UNIQUE_ID_BYTES");

// Makes the communicator's GPU current for a scope and puts the caller's back afterwards (a
// communicator may be used, or destroyed, by a thread whose current GPU is another).
class device_guard {
 public:
  explicit device_guard(int device) {
    if (cudaGetDevice(&prev_) == cudaSuccess && prev_ != device)
      switched_ = cudaSetDevice(device) == cudaSuccess;
  }
  ~device_guard() {
    if (switched_) (void)cudaSetDevice(prev_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

template <class T>
constexpr ncclDataType_t nccl_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  return std::is_same_v<T, float> ? ncclFloat : ncclDouble;
}

class nccl_comm final : public communicator {
 public:
  nccl_comm(int rank, int world, std::shared_ptr<kv_store> store, const std::string& prefix,
            const nccl_options& opt)
      : rank_(rank),
        world_(world),
        prefix_(prefix),
        op_timeout_(opt.op_timeout),
        timeout_key_(opt.timeout_key) {
    plan::check_args(rank, world, store.get(), opt);
    device_ = visible_device();  // before the rendezvous: a rank without a GPU fails at once
    const std::vector<char> id = plan::exchange_unique_id(
        *store, rank, world, prefix, &plan::new_unique_id, opt.rendezvous_timeout);
    try {
      cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      cuda_check(cudaMalloc(&scratch_, sizeof(float)), "cudaMalloc (barrier scratch)");
      cuda_check(cudaMemset(scratch_, 0, sizeof(float)), "cudaMemset (barrier scratch)");
      init(id, opt.rendezvous_timeout);
    } catch (...) {
      release();
      throw;
    }
  }

  ~nccl_comm() override {
    shut_down();
    release();
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce(float* data, std::size_t n) override { all_reduce_impl(data, n); }
  void all_reduce(double* data, std::size_t n) override { all_reduce_impl(data, n); }

  // in: [world*chunk] -> out: [chunk] (GPU memory)
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    check_buffer("reduce_scatter", "in", in, std::size_t(world_) * chunk * sizeof(float));
    check_buffer("reduce_scatter", "out", out, chunk * sizeof(float));
    if (chunk == 0) return;
    run("reduce_scatter",
        [&] { return ncclReduceScatter(in, out, chunk, ncclFloat, ncclSum, comm_, stream_); });
    add_bytes(ring_bytes(op::reduce_scatter, world_ * chunk * sizeof(float), world_, rank_));
  }

  // in: [chunk] -> out: [world*chunk] (GPU memory)
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    check_buffer("all_gather", "in", in, chunk * sizeof(float));
    check_buffer("all_gather", "out", out, std::size_t(world_) * chunk * sizeof(float));
    if (chunk == 0) return;
    run("all_gather", [&] { return ncclAllGather(in, out, chunk, ncclFloat, comm_, stream_); });
    add_bytes(ring_bytes(op::all_gather, world_ * chunk * sizeof(float), world_, rank_));
  }

  // data: [n] (GPU memory)
  void broadcast(float* data, std::size_t n, int root) override {
    if (root < 0 || root >= world_)
      fail("comm nccl (rank {} of {}): broadcast root {} out of range, expected 0..{}", rank_,
           world_, root, world_ - 1);
    check_buffer("broadcast", "data", data, n * sizeof(float));
    if (n == 0) return;
    run("broadcast", [&] { return ncclBroadcast(data, data, n, ncclFloat, root, comm_, stream_); });
    add_bytes(ring_bytes(op::broadcast, n * sizeof(float), world_, rank_, root));
  }

  // in: [sum(send)] -> out: [sum(recv)] (GPU memory)
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    plan::plan_all_to_all("nccl", rank_, world_, send, recv, in, out, a2a_);
    check_buffer("all_to_all", "in", in, a2a_.n_in * sizeof(float));
    check_buffer("all_to_all", "out", out, a2a_.n_out * sizeof(float));
    // Counts all zero: nothing is enqueued (an empty group), and no peer posts anything for
    // this rank either, since the counts agree pairwise.
    run("all_to_all", [&] { return enqueue_all_to_all(in, send, out, recv); });
    add_bytes(all_to_all_bytes(send, rank_));
  }

  void barrier() override {
    run("barrier",
        [&] { return ncclAllReduce(scratch_, scratch_, 1, ncclFloat, ncclSum, comm_, stream_); });
  }

  // The base class rounds to bf16 on the host, which cannot read GPU memory; a device rounding
  // kernel (and ncclBfloat16 on the wire) is future work.
  void all_reduce_bf16(float*, std::size_t) override { refuse_bf16(); }
  void reduce_scatter_bf16(const float*, float*, std::size_t) override { refuse_bf16(); }

 private:
  [[noreturn]] static void refuse_bf16() {
    fail("comm nccl: bf16 gradient reduction is not supported yet (train.reduce_dtype = fp32)");
  }

  template <class T>
  void all_reduce_impl(T* data, std::size_t n) {
    check_buffer("all_reduce", "data", data, n * sizeof(T));
    if (n == 0) return;
    run("all_reduce",
        [&] { return ncclAllReduce(data, data, n, nccl_type<T>(), ncclSum, comm_, stream_); });
    add_bytes(ring_bytes(op::all_reduce, n * sizeof(T), world_, rank_));
  }

  // The own piece copied on the stream, then every peer's send and receive in one group (NCCL
  // posts them together, so no ordering between pairs can deadlock). Returns the first failure.
  ncclResult_t enqueue_all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                                  std::span<const std::size_t> recv) {
    const auto me = static_cast<std::size_t>(rank_);
    if (send[me]) {
      const cudaError_t e =
          cudaMemcpyAsync(out + a2a_.recv_off[me], in + a2a_.send_off[me], send[me] * sizeof(float),
                          cudaMemcpyDeviceToDevice, stream_);
      if (e != cudaSuccess) cuda_failed("all_to_all (own piece)", e);
    }
    if (world_ == 1) return ncclSuccess;
    ncclResult_t first = ncclGroupStart();
    if (first != ncclSuccess) return first;
    for (std::size_t r = 0; r < send.size(); ++r) {
      if (r == me) continue;
      const int peer = static_cast<int>(r);
      if (send[r] && first == ncclSuccess)
        first = ncclSend(in + a2a_.send_off[r], send[r], ncclFloat, peer, comm_, stream_);
      if (recv[r] && first == ncclSuccess)
        first = ncclRecv(out + a2a_.recv_off[r], recv[r], ncclFloat, peer, comm_, stream_);
    }
    const ncclResult_t end = ncclGroupEnd();  // always closes the group, even after a failure
    return first != ncclSuccess ? first : end;
  }

  // Runs one collective: `enqueue` makes the NCCL call(s) and returns the result; then waits
  // (bounded by op_timeout) until NCCL has enqueued it and the stream has finished it.
  template <class F>
  void run(const char* what, F&& enqueue) {
    if (!comm_)
      fail(
          "comm nccl: rank {} of {}: {} on a communicator that was aborted after an earlier "
          "failure ({}); build a new group",
          rank_, world_, what, broken_);
    device_guard on(device_);
    const ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) nccl_failed(what, r);
    wait(what, op_timeout_,
         [&] { return plan::timeout_message(rank_, world_, what, op_timeout_, timeout_key_); });
  }

  // Polls NCCL's state, then the stream, until both are done or `limit` passes; past it the
  // communicator is aborted and zf::error says timeout_text() (built only then: no allocation
  // on the way of a collective that completes).
  template <class Text>
  void wait(const char* what, milliseconds limit, Text&& timeout_text) {
    ncclResult_t state = ncclSuccess;
    cudaError_t stream_state = cudaSuccess;
    const bool done = plan::poll_until(
        [&] {
          (void)ncclCommGetAsyncError(comm_, &state);
          if (state == ncclInProgress) return false;
          if (state != ncclSuccess) return true;
          stream_state = cudaStreamQuery(stream_);
          return stream_state != cudaErrorNotReady;
        },
        limit);
    if (!done) {
      const std::string msg = timeout_text();
      abort_comm(msg);
      throw zf::error(msg);
    }
    if (state != ncclSuccess) nccl_failed(what, state);
    if (stream_state != cudaSuccess) cuda_failed(what, stream_state);
  }

  // ncclCommInitRankConfig with blocking = 0, waited on for at most `limit`.
  void init(const std::vector<char>& id_bytes, milliseconds limit) {
    ncclUniqueId id;
    std::memcpy(id.internal, id_bytes.data(), sizeof id.internal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    config.commName = prefix_.c_str();  // NCCL's logs name the group
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) nccl_failed("NCCL init", r);
    if (!comm_) fail("comm nccl: rank {} of {}: NCCL init returned no communicator", rank_, world_);
    wait("NCCL init", limit,
         [&] { return plan::init_timeout_message(rank_, world_, limit, prefix_); });
  }

  int visible_device() const {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      (void)cudaGetLastError();
      fail(
          "comm nccl: rank {} of {}: no CUDA device visible to this process ({}); the nccl "
          "backend needs one GPU per rank",
          rank_, world_, e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount: 0");
    }
    int device = 0;
    cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    return device;
  }

  // zf::error unless p is `bytes` of GPU memory on this communicator's device (NCCL would fault,
  // or read the wrong GPU, on anything else). Only where the buffer starts can be checked.
  void check_buffer(const char* what, const char* which, const void* p, std::size_t bytes) const {
    if (bytes == 0) return;
    if (!p)
      fail("comm nccl (rank {} of {}): {} of {} bytes with a null {} buffer", rank_, world_, what,
           bytes, which);
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      fail("comm nccl (rank {} of {}): {}: cannot tell where the {} buffer lives ({})", rank_,
           world_, what, which, cudaGetErrorString(e));
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
      fail(
          "comm nccl (rank {} of {}): {}'s {} buffer {} is host memory; the nccl backend takes GPU "
          "memory (kernels::gpu_alloc)",
          rank_, world_, what, which, fmt::ptr(p));
    if (a.type == cudaMemoryTypeDevice && a.device != device_)
      fail("comm nccl (rank {} of {}): {}'s {} buffer is on GPU {}, this communicator's is GPU {}",
           rank_, world_, what, which, a.device, device_);
  }

  void cuda_check(cudaError_t e, const char* call) const {
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    fail("comm nccl: rank {} of {}: {} failed: {}", rank_, world_, call, cudaGetErrorString(e));
  }

  // A failed NCCL call or collective: the group is aborted (NCCL's own advice: nothing can be
  // assumed of the operations in flight) and the error says what NCCL said.
  [[noreturn]] void nccl_failed(const char* what, ncclResult_t r) {
    const char* last = comm_ ? ncclGetLastError(comm_) : ncclGetLastError(nullptr);
    const std::string msg = fmt::format(
        "comm nccl: rank {} of {}: {} failed: {}{} [nccl: {}]; the communicator was aborted", rank_,
        world_, what, ncclGetErrorString(r),
        r == ncclRemoteError ? " (a peer failed or exited)" : "", last ? last : "");
    abort_comm(msg);
    throw zf::error(msg);
  }

  [[noreturn]] void cuda_failed(const char* what, cudaError_t e) {
    (void)cudaGetLastError();
    const std::string msg = fmt::format(
        "comm nccl: rank {} of {}: {} failed on the GPU: {}; the communicator was aborted", rank_,
        world_, what, cudaGetErrorString(e));
    abort_comm(msg);
    throw zf::error(msg);
  }

  void abort_comm(const std::string& why) {
    if (comm_) {
      device_guard on(device_);
      (void)ncclCommAbort(comm_);  // blocking even for a non-blocking communicator
      comm_ = nullptr;
    }
    broken_ = why;
  }

  // A healthy communicator: ncclCommFinalize (waited on, bounded: a peer that died after the last
  // collective must not hang the destructor), then ncclCommDestroy; ncclCommAbort otherwise.
  void shut_down() noexcept {
    if (!comm_) return;
    device_guard on(device_);
    ncclResult_t state = ncclCommFinalize(comm_);
    if (state == ncclSuccess || state == ncclInProgress) {
      const bool done = plan::poll_until(
          [&] {
            (void)ncclCommGetAsyncError(comm_, &state);
            return state != ncclInProgress;
          },
          std::min(op_timeout_, milliseconds(60'000)));
      if (done && state == ncclSuccess) {
        (void)ncclCommDestroy(comm_);
        comm_ = nullptr;
        return;
      }
    }
    (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // The stream and the scratch (and a communicator still held: aborted).
  void release() noexcept {
    device_guard on(device_);
    if (comm_) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
    if (scratch_) (void)cudaFree(scratch_);
    scratch_ = nullptr;
    if (stream_) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  const int rank_;
  const int world_;
  const std::string prefix_;
  const milliseconds op_timeout_;
  const std::string timeout_key_;  // nccl_options::timeout_key
  int device_ = 0;                 // the CUDA device current at construction
  ncclComm_t comm_ = nullptr;      // null once aborted (broken_ says why)
  cudaStream_t stream_ = nullptr;
  float* scratch_ = nullptr;  // [1] on the device: barrier's all_reduce
  plan::all_to_all_plan a2a_;
  std::string broken_;
};

}  // namespace

std::vector<char> nccl_plan::new_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    fail("comm nccl: ncclGetUniqueId failed: {} ({})", ncclGetErrorString(r),
         ncclGetLastError(nullptr));
  return std::vector<char>(id.internal, id.internal + sizeof id.internal);
}

std::unique_ptr<communicator> make_nccl(int rank, int world, std::shared_ptr<kv_store> store,
                                        const std::string& prefix, const nccl_options& options) {
  return std::make_unique<nccl_comm>(rank, world, std::move(store), prefix, options);
}

}  // namespace zf::comm
