// `gloo` backend: one rank of a process group over Gloo's TCP transport (CPU buffers).
//
// Rendezvous: a gloo::rendezvous::Store adapter over our kv_store, namespaced by a PrefixStore;
// connectFullMesh publishes this rank's addresses under "<prefix>/<rank>" and waits for every
// other rank's key. A key that never appears is a missing rank: zf::error names it.
//
// Which Gloo op does what (Debian libgloo-dev git20220518):
//   all_reduce      gloo::allreduce (ring: reduce-scatter + all-gather in <= 1 MiB segments; each
//                   segment is reduced once, by one rank, and copied to the others, so every
//                   rank gets the same bits, and the schedule is fixed, so runs repeat)
//   all_gather      gloo::allgather (ring; in place when `in` is out + rank*chunk)
//   broadcast       gloo::broadcast (binomial tree from root)
//   all_to_all      gloo::alltoallv (copies its own piece, then posts every send and receive at
//                   once, pairs ordered by rank distance, and waits for all; zero-length pieces are
//                   still exchanged, so every rank posts the same pairs even when its counts are
//                   all zero and nothing stale is left on the slot for the next call)
//   barrier         gloo::barrier
//   reduce_scatter  a ring over Gloo's transport (UnboundBuffer send/recv), written here: this
//                   Gloo has no options-style reduce-scatter, only the old-style
//                   ReduceScatterHalvingDoubling, which works in place on a mutable input (ours is
//                   const), binds its pointers at construction (so it would be built per call or
//                   cached per size), allocates two scratch buffers the size of the whole input
//                   per instance, and counts elements in an int.
// Allocation per call: Gloo's options objects allocate small UnboundBuffer handles (and
// allreduce a std::function and a 2-segment scratch, <= 2 MiB; alltoallv four [world] offset
// tables, from the two [world] int64 count vectors we hand it) on every call; that is inside
// Gloo and cannot be hoisted. Our reduce_scatter keeps its scratch ([chunk] receive buffer, and
// a second [chunk] accumulator when world > 2) and their handles across calls, growing only when
// a larger chunk arrives; it allocates one handle for `in` per call.
// A collective that fails throws zf::error and the group is then unusable. A peer that died
// (connection closed) or stopped (nothing arrives within gloo_options::op_timeout) is said as
// such, with the limit and the key that sets it; any other Gloo failure keeps Gloo's text.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>
#include <signal.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <numeric>
#include <span>
#include <string_view>

#include "kernels/convert.hpp"
#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"

namespace zf::comm {
namespace {

using std::chrono::milliseconds;

// Gloo's Store interface over kv_store; remembers the last key it waited for, so a timeout can
// name the rank that did not show up.
class store_adapter final : public gloo::rendezvous::Store {
 public:
  store_adapter(std::shared_ptr<kv_store> kv, milliseconds timeout)
      : kv_(std::move(kv)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override { kv_->set(key, data); }

  std::vector<char> get(const std::string& key) override {
    last_key_ = key;
    return kv_->get(key, timeout_);
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    const auto limit = timeout.count() > 0 ? std::min(timeout, timeout_) : timeout_;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (const auto& key : keys) {
      last_key_ = key;
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      kv_->get(key, std::max(left, milliseconds(0)));
    }
  }

  const std::string& last_key() const { return last_key_; }

 private:
  std::shared_ptr<kv_store> kv_;
  milliseconds timeout_;
  std::string last_key_;
};

// c[i] = a[i] + b[i]; c may equal a. (gloo::sum<T> counts with an int.)
template <class T>
void add(void* c_, const void* a_, const void* b_, std::size_t n) {
  T* c = static_cast<T*>(c_);
  const T* a = static_cast<const T*>(a_);
  const T* b = static_cast<const T*>(b_);
  for (std::size_t i = 0; i < n; ++i) c[i] = a[i] + b[i];
}

// c[i] = bf16(a[i] + b[i]) over bf16 bits, the sum formed in fp32 and rounded to nearest even
// (each hop of a bf16 ring rounds its partial sum, as NCCL's bf16 reductions do).
void add_bf16(void* c_, const void* a_, const void* b_, std::size_t n) {
  auto* c = static_cast<std::uint16_t*>(c_);
  const auto* a = static_cast<const std::uint16_t*>(a_);
  const auto* b = static_cast<const std::uint16_t*>(b_);
  for (std::size_t i = 0; i < n; ++i)
    c[i] = kernels::f32_to_bf16(kernels::bf16_to_f32(a[i]) + kernels::bf16_to_f32(b[i]));
}

// What a Gloo exception's text says happened (Gloo has one exception type for all I/O
// failures). git20220518's messages: "Timed out waiting <n>ms for recv|send operation to
// complete", "Read timeout", "Write timeout", "Application timeout caused pair closure" (a
// timeout); "Connection closed by peer", "Socket closed", "Socket unexpectedly closed",
// "Read error", "Write error" (the peer's process went away, or the network).
enum class failure { timeout, peer_lost, other };

failure classify(std::string_view text) {
  auto has = [&](std::string_view s) { return text.find(s) != std::string_view::npos; };
  if (has("Timed out") || has("timeout") || has("Timeout")) return failure::timeout;
  if (has("closed") || has("Read error") || has("Write error") || has("reset by peer") ||
      has("Broken pipe"))
    return failure::peer_lost;
  return failure::other;
}

// Gloo writes to its sockets with writev, which raises SIGPIPE once the peer has died; its
// default action would kill a survivor silently before Gloo could report the closed connection.
// Like Python (under which PyTorch runs Gloo), a process with a Gloo group ignores SIGPIPE, so
// the write fails with EPIPE and the collective throws. A handler someone installed is kept.
void ignore_sigpipe() {
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
      old.sa_handler == SIG_DFL)
    std::signal(SIGPIPE, SIG_IGN);
}

// "60 s" for whole seconds, else "1500 ms".
std::string duration_text(milliseconds d) {
  return d.count() % 1000 == 0 ? fmt::format("{} s", d.count() / 1000)
                               : fmt::format("{} ms", d.count());
}

// Slot prefix for our reduce_scatter ring; Gloo's own collectives use prefixes 0x01..0x08.
constexpr std::uint8_t reduce_scatter_slot_prefix = 0x7a;
// Reduce-scatter pipelines the ring in segments of this many bytes, two in flight each way.
constexpr std::size_t segment_bytes = std::size_t{1} << 20;

class gloo_comm final : public communicator {
 public:
  gloo_comm(int rank, int world, std::shared_ptr<kv_store> store, const std::string& iface_addr,
            const std::string& prefix, const gloo_options& opt)
      : rank_(rank), world_(world), op_timeout_(opt.op_timeout), timeout_key_(opt.timeout_key) {
    if (world < 1) fail("comm gloo: world must be >= 1, got {}", world);
    if (rank < 0 || rank >= world)
      fail("comm gloo: rank {} out of range for world {} (expected 0..{})", rank, world, world - 1);
    if (!store) fail("comm gloo: rank {} of {}: no rendezvous store given", rank, world);
    if (opt.rendezvous_timeout.count() <= 0 || opt.op_timeout.count() <= 0)
      fail("comm gloo: timeouts must be positive, got rendezvous {} ms, op {} ms",
           opt.rendezvous_timeout.count(), opt.op_timeout.count());

    if (world > 1) ignore_sigpipe();
    store_adapter adapter(std::move(store), opt.rendezvous_timeout);
    gloo::rendezvous::PrefixStore prefixed(prefix, adapter);
    try {
      gloo::transport::tcp::attr attr;
      if (!iface_addr.empty()) attr.hostname = iface_addr;
      device_ = gloo::transport::tcp::CreateDevice(attr);
    } catch (const std::exception& e) {
      fail("comm gloo: rank {} of {}: cannot open a TCP device on '{}': {}", rank, world,
           iface_addr, e.what());
    }
    ctx_ = std::make_shared<gloo::rendezvous::Context>(rank, world);
    ctx_->setTimeout(opt.rendezvous_timeout);
    try {
      ctx_->connectFullMesh(prefixed, device_);
    } catch (const zf::error& e) {
      // The store timed out: the key names the rank ("<prefix>/<rank>").
      const std::string& key = adapter.last_key();
      const auto slash = key.find_last_of('/');
      const std::string who = key.substr(slash == std::string::npos ? 0 : slash + 1);
      fail(
          "comm gloo: rank {} of {} gave up after {} ms waiting for rank {} to show up "
          "(store key '{}', prefix '{}'); did it start, with the same world and prefix? ({})",
          rank, world, opt.rendezvous_timeout.count(), who, key, prefix, e.what());
    } catch (const std::exception& e) {
      fail(
          "comm gloo: rank {} of {} could not connect to its peers (prefix '{}', within {} ms): "
          "{}",
          rank, world, prefix, opt.rendezvous_timeout.count(), e.what());
    }
    ctx_->setTimeout(opt.op_timeout);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string backend() const override { return "gloo"; }

  void all_reduce(float* data, std::size_t n) override { all_reduce_impl(data, n); }
  void all_reduce(double* data, std::size_t n) override { all_reduce_impl(data, n); }

  // in: [world*chunk] -> out: [chunk]
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    check_ptrs("reduce_scatter", chunk, in, out);
    if (world_ == 1) {
      if (chunk && in != out) std::memmove(out, in, chunk * sizeof(float));
      return;
    }
    if (chunk == 0) return;
    guarded("reduce_scatter", [&] { ring_reduce_scatter(in, out, chunk, &add<float>); });
    add_bytes(ring_bytes(op::reduce_scatter, world_ * chunk * sizeof(float), world_, rank_));
  }

  // bf16 on the wire: in rounded into bf16 scratch [world*chunk] (so out may alias
  // in + rank*chunk), the ring over bf16, block rank widened into out.
  void reduce_scatter_bf16(const float* in, float* out, std::size_t chunk) override {
    check_ptrs("reduce_scatter_bf16", chunk, in, out);
    if (world_ == 1 || chunk == 0) return communicator::reduce_scatter_bf16(in, out, chunk);
    const std::size_t n = std::size_t(world_) * chunk;
    if (bf16_in_.size() < n + chunk) bf16_in_.resize(n + chunk);
    std::uint16_t* in16 = bf16_in_.data();
    std::uint16_t* out16 = in16 + n;
    kernels::f32_to_bf16(in, in16, n);
    guarded("reduce_scatter_bf16", [&] { ring_reduce_scatter(in16, out16, chunk, &add_bf16); });
    for (std::size_t i = 0; i < chunk; ++i) out[i] = kernels::bf16_to_f32(out16[i]);
    add_bytes(ring_bytes(op::reduce_scatter, n * 2, world_, rank_));
  }

  void all_reduce_bf16(float* data, std::size_t n) override {
    check_ptrs("all_reduce_bf16", n, data, data);
    if (world_ == 1 || n == 0) return communicator::all_reduce_bf16(data, n);
    if (bf16_in_.size() < n) bf16_in_.resize(n);
    std::uint16_t* d16 = bf16_in_.data();
    kernels::f32_to_bf16(data, d16, n);
    guarded("all_reduce_bf16", [&] {
      gloo::AllreduceOptions o(ctx_);
      o.setOutput(d16, n);
      o.setReduceFunction(&add_bf16);
      gloo::allreduce(o);
    });
    for (std::size_t i = 0; i < n; ++i) data[i] = kernels::bf16_to_f32(d16[i]);
    add_bytes(ring_bytes(op::all_reduce, n * 2, world_, rank_));
  }

  // in: [chunk] -> out: [world*chunk]
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    check_ptrs("all_gather", chunk, in, out);
    float* mine = out + static_cast<std::size_t>(rank_) * chunk;
    if (world_ == 1) {  // gloo::allgather insists on a pair to itself
      if (chunk && in != mine) std::memmove(mine, in, chunk * sizeof(float));
      return;
    }
    if (chunk == 0) return;
    guarded("all_gather", [&] {
      gloo::AllgatherOptions o(ctx_);
      if (in != mine) o.setInput(const_cast<float*>(in), chunk);  // else in place
      o.setOutput(out, static_cast<std::size_t>(world_) * chunk);
      gloo::allgather(o);
    });
    add_bytes(ring_bytes(op::all_gather, world_ * chunk * sizeof(float), world_, rank_));
  }

  // data: [n]
  void broadcast(float* data, std::size_t n, int root) override {
    check_ptrs("broadcast", n, data, data);
    if (root < 0 || root >= world_)
      fail("comm gloo (rank {} of {}): broadcast root {} out of range, expected 0..{}", rank_,
           world_, root, world_ - 1);
    if (world_ == 1 || n == 0) return;
    guarded("broadcast", [&] {
      gloo::BroadcastOptions o(ctx_);
      o.setOutput(data, n);
      o.setRoot(root);
      gloo::broadcast(o);
    });
    add_bytes(ring_bytes(op::broadcast, n * sizeof(float), world_, rank_, root));
  }

  // in: [sum(send)] -> out: [sum(recv)]
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    const std::size_t n_in = std::accumulate(send.begin(), send.end(), std::size_t{0});
    const std::size_t n_out = std::accumulate(recv.begin(), recv.end(), std::size_t{0});
    check_all_to_all(send, recv, in, n_in, out, n_out);
    if (world_ == 1) {
      if (n_in) std::memcpy(out, in, n_in * sizeof(float));
      return;
    }
    // No early return when this rank's counts are all zero: the peers still post zero-length
    // pieces to and from it, which must be matched now (see the header comment).
    guarded("all_to_all", [&] {
      // Gloo memcpys its own piece through these pointers even when it is empty; an empty
      // buffer gets a valid address rather than null.
      float none = 0.0f;
      gloo::AlltoallvOptions o(ctx_);
      o.setInput(n_in ? const_cast<float*>(in) : &none,
                 std::vector<std::int64_t>(send.begin(), send.end()));  // Gloo only reads `in`
      o.setOutput(n_out ? out : &none, std::vector<std::int64_t>(recv.begin(), recv.end()));
      gloo::alltoallv(o);
    });
    add_bytes(all_to_all_bytes(send, rank_));
  }

  void barrier() override {
    if (world_ == 1) return;
    guarded("barrier", [&] {
      gloo::BarrierOptions o(ctx_);
      gloo::barrier(o);
    });
  }

 private:
  template <class T>
  void all_reduce_impl(T* data, std::size_t n) {
    check_ptrs("all_reduce", n, data, data);
    if (world_ == 1 || n == 0) return;
    guarded("all_reduce", [&] {
      gloo::AllreduceOptions o(ctx_);
      o.setOutput(data, n);
      o.setReduceFunction(&add<T>);
      gloo::allreduce(o);
    });
    add_bytes(ring_bytes(op::all_reduce, n * sizeof(T), world_, rank_));
  }

  // Ring reduce-scatter, N-1 steps. At step s rank r sends the partial sum of block
  // (r-s-1) mod N to rank r+1 and receives the partial sum of block (r-s-2) mod N from rank r-1,
  // adding its own contribution; after the last step it holds block r, summed as
  // ((x[r+1] + x[r+2]) + ...) + x[r] (indices mod N). Block r of `in` is only read at the last
  // step, elementwise, so `out` may be in + r*chunk. Step 0 sends straight from `in`; later
  // steps send the previous step's sum (`acc`) while receiving into `rcv`, then swap the two.
  template <class T>
  void ring_reduce_scatter(const T* in, T* out, std::size_t chunk,
                           void (*add_fn)(void*, const void*, const void*, std::size_t)) {
    const std::size_t n = static_cast<std::size_t>(world_);
    const std::size_t r = static_cast<std::size_t>(rank_);
    const int right = (rank_ + 1) % world_;
    const int left = (rank_ + world_ - 1) % world_;
    const std::uint64_t slot = gloo::Slot::build(reduce_scatter_slot_prefix, 0);
    const milliseconds timeout = ctx_->getTimeout();
    reserve_scratch(chunk * sizeof(T));

    auto in_buf = ctx_->createUnboundBuffer(const_cast<T*>(in), n * chunk * sizeof(T));
    gloo::transport::UnboundBuffer* acc = acc_buf_.get();
    gloo::transport::UnboundBuffer* rcv = rcv_buf_.get();

    const std::size_t seg = segment_bytes / sizeof(T);
    const std::size_t nseg = (chunk + seg - 1) / seg;
    auto seg_len = [&](std::size_t j) { return std::min(seg, chunk - j * seg) * sizeof(T); };

    for (std::size_t s = 0; s + 1 < n; ++s) {
      const std::size_t send_block = (r + 2 * n - s - 1) % n;
      const std::size_t recv_block = (r + 2 * n - s - 2) % n;
      gloo::transport::UnboundBuffer* src = s == 0 ? in_buf.get() : acc;
      const std::size_t src_off = s == 0 ? send_block * chunk * sizeof(T) : 0;
      const T* own = in + recv_block * chunk;
      const T* got = static_cast<const T*>(rcv->ptr);
      T* dst = s + 2 == n ? out : static_cast<T*>(rcv->ptr);

      for (std::size_t j = 0; j < std::min<std::size_t>(2, nseg); ++j) {
        rcv->recv(left, slot, j * segment_bytes, seg_len(j));
        src->send(right, slot, src_off + j * segment_bytes, seg_len(j));
      }
      for (std::size_t j = 0; j < nseg; ++j) {
        rcv->waitRecv(timeout);  // completions arrive in posting order (one pair, one slot)
        const std::size_t lo = j * seg;
        add_fn(dst + lo, got + lo, own + lo, seg_len(j) / sizeof(T));
        if (j + 2 < nseg) rcv->recv(left, slot, (j + 2) * segment_bytes, seg_len(j + 2));
        src->waitSend(timeout);
        if (j + 2 < nseg) src->send(right, slot, src_off + (j + 2) * segment_bytes, seg_len(j + 2));
      }
      std::swap(acc, rcv);
    }
  }

  // The ring's receive buffer and (world > 2) accumulator, at least `bytes` each.
  void reserve_scratch(std::size_t bytes) {
    if (bytes <= scratch_bytes_) return;
    const std::size_t floats = (bytes + sizeof(float) - 1) / sizeof(float);
    rcv_buf_.reset();
    acc_buf_.reset();
    rcv_.assign(floats, 0.0f);
    rcv_buf_ = ctx_->createUnboundBuffer(rcv_.data(), floats * sizeof(float));
    if (world_ > 2) {
      acc_.assign(floats, 0.0f);
      acc_buf_ = ctx_->createUnboundBuffer(acc_.data(), floats * sizeof(float));
    }
    scratch_bytes_ = floats * sizeof(float);
  }

  void check_ptrs(const char* what, std::size_t count, const void* in, const void* out) const {
    if (count && (!in || !out))
      fail("comm gloo (rank {} of {}): {} of {} elements with a null buffer", rank_, world_, what,
           count);
  }

  // What one rank can check of an all_to_all on its own (the ranks' counts agreeing is left to
  // the caller: make_gloo's comment). Gloo would assert on the first two with its own text.
  void check_all_to_all(std::span<const std::size_t> send, std::span<const std::size_t> recv,
                        const float* in, std::size_t n_in, const float* out,
                        std::size_t n_out) const {
    const auto w = static_cast<std::size_t>(world_);
    const auto me = static_cast<std::size_t>(rank_);
    if (send.size() != w || recv.size() != w)
      fail(
          "comm gloo (rank {} of {}): all_to_all with {} send and {} recv counts, expected {} "
          "each (one per rank)",
          rank_, world_, send.size(), recv.size(), w);
    if (send[me] != recv[me])
      fail(
          "comm gloo (rank {} of {}): all_to_all sends {} floats to itself but expects {} from "
          "itself",
          rank_, world_, send[me], recv[me]);
    check_ptrs("all_to_all (in)", n_in, in, in);
    check_ptrs("all_to_all (out)", n_out, out, out);
    const auto in_lo = reinterpret_cast<std::uintptr_t>(in);
    const auto out_lo = reinterpret_cast<std::uintptr_t>(out);
    if (n_in && n_out && in_lo < out_lo + n_out * sizeof(float) &&
        out_lo < in_lo + n_in * sizeof(float))
      fail("comm gloo (rank {} of {}): all_to_all with overlapping in and out buffers", rank_,
           world_);
  }

  // Runs one collective; Gloo's exceptions become zf::error. A timeout (a peer that froze, or
  // died without its socket closing) and a closed connection (a peer that died) say so and name
  // the limit, so a survivor's log tells what happened instead of Gloo's file:line text alone.
  template <class F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const zf::error&) {
      throw;
    } catch (const std::exception& e) {
      switch (classify(e.what())) {
        case failure::timeout:
          fail(
              "comm gloo: rank {} of {}: {} did not complete within {} (a peer died or stopped{}) "
              "[gloo: {}]",
              rank_, world_, what, duration_text(op_timeout_), key_note(), e.what());
        case failure::peer_lost:
          fail(
              "comm gloo: rank {} of {}: {} failed: a peer closed its connection (it died or "
              "exited) [gloo: {}]",
              rank_, world_, what, e.what());
        case failure::other:
          break;
      }
      fail("comm gloo (rank {} of {}): {} failed: {}", rank_, world_, what, e.what());
    }
  }

  std::string key_note() const {
    return timeout_key_.empty() ? std::string() : "; limit set by " + timeout_key_;
  }

  const int rank_;
  const int world_;
  const milliseconds op_timeout_;
  const std::string timeout_key_;  // gloo_options::timeout_key
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  std::vector<float> rcv_, acc_;  // reduce_scatter scratch, scratch_bytes_ each
  std::unique_ptr<gloo::transport::UnboundBuffer> rcv_buf_, acc_buf_;
  std::size_t scratch_bytes_ = 0;
  std::vector<std::uint16_t> bf16_in_;  // the bf16 collectives' rounded data (and result)
};

}  // namespace

std::unique_ptr<communicator> make_gloo(int rank, int world, std::shared_ptr<kv_store> store,
                                        const std::string& iface_addr, const std::string& prefix,
                                        const gloo_options& options) {
  return std::make_unique<gloo_comm>(rank, world, std::move(store), iface_addr, prefix, options);
}

}  // namespace zf::comm
