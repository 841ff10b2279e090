// Backend-independent parts of the data plane: byte accounting, the router and the file store.
// Backends live in comm_local.cpp (threads, shared memory) and comm_gloo.cpp (processes, TCP).
#include "runtime/dist/comm.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <thread>

#include "kernels/convert.hpp"
#include "runtime/core/error.hpp"

namespace zf::comm {

std::string_view to_string(op o) {
  switch (o) {
    case op::all_reduce:
      return "all_reduce";
    case op::reduce_scatter:
      return "reduce_scatter";
    case op::all_gather:
      return "all_gather";
    case op::broadcast:
      return "broadcast";
    case op::all_to_all:
      return "all_to_all";
  }
  return "?";
}

std::uint64_t ring_bytes(op o, std::size_t bytes, int world, int rank, int root) {
  if (world <= 1) return 0;
  const auto n = static_cast<std::uint64_t>(world);
  const auto b = static_cast<std::uint64_t>(bytes);
  switch (o) {
    case op::all_reduce:
      return 2 * (n - 1) * b / n;
    case op::reduce_scatter:
    case op::all_gather:
    case op::all_to_all:
      return (n - 1) * b / n;
    case op::broadcast:
      return rank == (root + world - 1) % world ? 0 : b;
  }
  return 0;
}

std::uint64_t all_to_all_bytes(std::span<const std::size_t> send, int rank) {
  std::uint64_t b = 0;
  for (std::size_t r = 0; r < send.size(); ++r)
    if (static_cast<int>(r) != rank) b += static_cast<std::uint64_t>(send[r]) * sizeof(float);
  return b;
}

void communicator::all_to_all(const float*, std::span<const std::size_t>, float*,
                              std::span<const std::size_t>) {
  fail("comm {} (rank {} of {}): all_to_all is not implemented by this backend", backend(), rank(),
       world());
}

int pick_route(const std::vector<route>& table, op o, std::size_t bytes) {
  for (const auto& r : table)
    if (r.o == o && bytes >= r.min_bytes) return r.backend;
  return 0;
}

namespace {

// Dispatches each collective to one of its backends by op and message size. Every rank must
// hold the same table, so all ranks of a collective pick the same backend.
class router final : public communicator {
 public:
  router(std::vector<std::unique_ptr<communicator>> backends, std::vector<route> table)
      : backends_(std::move(backends)), table_(std::move(table)) {
    if (backends_.empty()) fail("comm router: needs at least one backend, got none");
    for (std::size_t i = 0; i < backends_.size(); ++i)
      if (!backends_[i]) fail("comm router: backend {} is null", i);
    for (std::size_t i = 1; i < backends_.size(); ++i)
      if (backends_[i]->rank() != backends_[0]->rank() ||
          backends_[i]->world() != backends_[0]->world())
        fail("comm router: backend {} ({}) is rank {} of {}, backend 0 ({}) is rank {} of {}", i,
             backends_[i]->backend(), backends_[i]->rank(), backends_[i]->world(),
             backends_[0]->backend(), backends_[0]->rank(), backends_[0]->world());
    for (std::size_t i = 0; i < table_.size(); ++i) {
      if (table_[i].backend < 0 || table_[i].backend >= static_cast<int>(backends_.size()))
        fail("comm router: table row {} ({} from {} bytes) names backend {}, expected 0..{}", i,
             to_string(table_[i].o), table_[i].min_bytes, table_[i].backend, backends_.size() - 1);
      // Each rank routes by its own send size, which differs between ranks for all_to_all: a
      // threshold could split one collective across two backends and leave both halves waiting.
      if (table_[i].o == op::all_to_all && table_[i].min_bytes != 0)
        fail(
            "comm router: table row {} routes all_to_all from {} bytes; all_to_all sizes differ "
            "between ranks (uneven splits), so its rows must use min_bytes 0 (route by op only)",
            i, table_[i].min_bytes);
    }
  }

  int rank() const override { return backends_[0]->rank(); }
  int world() const override { return backends_[0]->world(); }
  std::string backend() const override {
    std::string s = "router(";
    for (std::size_t i = 0; i < backends_.size(); ++i) {
      if (i) s += ',';
      s += backends_[i]->backend();
    }
    s += ')';
    return s;
  }

  void all_reduce(float* data, std::size_t n) override {
    run(op::all_reduce, n, sizeof(float), [&](communicator& c) { c.all_reduce(data, n); });
  }
  void all_reduce(double* data, std::size_t n) override {
    run(op::all_reduce, n, sizeof(double), [&](communicator& c) { c.all_reduce(data, n); });
  }
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    run(op::reduce_scatter, chunk, sizeof(float),
        [&](communicator& c) { c.reduce_scatter(in, out, chunk); });
  }
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    run(op::all_gather, chunk, sizeof(float),
        [&](communicator& c) { c.all_gather(in, out, chunk); });
  }
  void broadcast(float* data, std::size_t n, int root) override {
    run(op::broadcast, n, sizeof(float), [&](communicator& c) { c.broadcast(data, n, root); });
  }
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    std::size_t total = 0;
    for (std::size_t s : send) total += s;
    run(op::all_to_all, total, sizeof(float),
        [&](communicator& c) { c.all_to_all(in, send, out, recv); });
  }
  void all_reduce_bf16(float* data, std::size_t n) override {
    run(op::all_reduce, n, 2, [&](communicator& c) { c.all_reduce_bf16(data, n); });
  }
  void reduce_scatter_bf16(const float* in, float* out, std::size_t chunk) override {
    run(op::reduce_scatter, chunk, 2,
        [&](communicator& c) { c.reduce_scatter_bf16(in, out, chunk); });
  }
  void barrier() override { backends_[0]->barrier(); }

 private:
  template <class F>
  void run(op o, std::size_t count, std::size_t elem_size, F&& f) {
    communicator& c = *backends_[static_cast<std::size_t>(
        pick_route(table_, o, message_bytes(o, count, elem_size, world())))];
    const auto before = c.bytes_sent();
    f(c);
    add_bytes(c.bytes_sent() - before);
  }

  std::vector<std::unique_ptr<communicator>> backends_;
  std::vector<route> table_;
};

// One file per key. Values are small (addresses), so a read is a whole-file read.
class file_store final : public kv_store {
 public:
  explicit file_store(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec || !std::filesystem::is_directory(dir_))
      fail("comm file store: cannot create directory '{}': {}", dir_.string(), ec.message());
  }

  void set(const std::string& key, const std::vector<char>& value) override {
    // Temporary names start with '.', which encoded keys never do, and are unique per process
    // and call, so concurrent writers never share one.
    const auto tmp = dir_ / fmt::format(".tmp-{}-{}", ::getpid(), counter_.fetch_add(1));
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(value.data(), static_cast<std::streamsize>(value.size()));
      f.close();
      if (!f) fail("comm file store: cannot write '{}' (key '{}')", tmp.string(), key);
    }
    std::error_code ec;
    std::filesystem::rename(tmp, dir_ / encode(key), ec);
    if (ec)
      fail("comm file store: cannot publish key '{}' in '{}': {}", key, dir_.string(),
           ec.message());
  }

  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override {
    const auto path = dir_ / encode(key);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::microseconds(200);
    for (;;) {
      std::ifstream f(path, std::ios::binary);
      if (f) return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
      if (std::chrono::steady_clock::now() >= deadline)
        fail("comm file store '{}': key '{}' was not set within {} ms", dir_.string(), key,
             timeout.count());
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(10'000));
    }
  }

 private:
  // [A-Za-z0-9_-] stay, every other byte becomes %XX: no '/', no leading '.', no collisions.
  static std::string encode(const std::string& key) {
    std::string s;
    for (unsigned char c : key) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-')
        s += static_cast<char>(c);
      else
        s += fmt::format("%{:02X}", c);
    }
    return s.empty() ? std::string("%") : s;
  }

  std::filesystem::path dir_;
  std::atomic<std::uint64_t> counter_{0};
};

}  // namespace

std::shared_ptr<kv_store> make_file_store(const std::filesystem::path& dir) {
  return std::make_shared<file_store>(dir);
}

std::unique_ptr<communicator> make_router(std::vector<std::unique_ptr<communicator>> backends,
                                          std::vector<route> table) {
  return std::make_unique<router>(std::move(backends), std::move(table));
}

void round_to_bf16(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = kernels::bf16_to_f32(kernels::f32_to_bf16(x[i]));
}

// The default bf16 collectives: the fp32 ones over rounded inputs, the result rounded, counted
// at bf16's bytes (the fp32 collective's own count replaced).
void communicator::all_reduce_bf16(float* data, std::size_t n) {
  round_to_bf16(data, data, n);
  const std::uint64_t before = bytes_sent();
  all_reduce(data, n);
  round_to_bf16(data, data, n);
  bytes_sent_.store(before + ring_bytes(op::all_reduce, n * 2, world(), rank()),
                    std::memory_order_relaxed);
}

void communicator::reduce_scatter_bf16(const float* in, float* out, std::size_t chunk) {
  const std::size_t n = std::size_t(world()) * chunk;
  if (bf16_scratch_.size() < n) bf16_scratch_.resize(n);
  round_to_bf16(in, bf16_scratch_.data(), n);  // out may alias in + rank*chunk: read it first
  const std::uint64_t before = bytes_sent();
  reduce_scatter(bf16_scratch_.data(), out, chunk);
  round_to_bf16(out, out, chunk);
  bytes_sent_.store(before + ring_bytes(op::reduce_scatter, n * 2, world(), rank()),
                    std::memory_order_relaxed);
}

void broadcast_buckets(communicator& c, float* data, std::size_t n, std::size_t bucket, int root) {
  bucket = std::max<std::size_t>(bucket, 1);
  for (std::size_t off = 0; off < n; off += bucket)
    c.broadcast(data + off, std::min(bucket, n - off), root);
}

}  // namespace zf::comm
