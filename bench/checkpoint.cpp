// bench_checkpoint: how close checkpoint writes come to the disk, and what checkpointing every
// step costs a training loop. Two measurements in one run:
//   bandwidth: the raw sequential write bandwidth of the disk (O_DIRECT pwrite of the same total
//     size in 1 MiB blocks, fsync) against our write of a gpt2-124M-sized state (124,439,808
//     parameters + exp_avg + exp_avg_sq = 1.49 GB: begin_checkpoint, write_shard per writer,
//     commit_checkpoint) with 1 and 2 writer threads, into the same folder, alternating, median
//     of --reps. bandwidth_fraction = best of our two medians / raw median (capped at 1).
//   step overhead: gpt2-124M training steps (transformer + adamw, B=4 T=256): --steps/2
//     without checkpoints, --steps with a checkpoint after every step, the rest of --steps
//     without (the two bracket the middle, so drift in the shared machine's speed cancels).
//     A checkpoint step snapshots params and moments (a copy) and a std::thread writes them
//     with save_checkpoint while the next steps run; a new write starts only when the previous
//     one finished. step_overhead = (time per step with - without) / without, in steady state:
//     the wait for the last write after the last step is reported but not counted (in a run
//     that write would overlap the next step).
// Writes under --dir (default build/bench-ckpt, relative to the working directory) and deletes
// what it wrote. Last line: "checkpoint bandwidth_fraction=X step_overhead=Y".
//   bench_checkpoint [--dir D] [--reps 3] [--steps 6] [--threads 2] [--skip-train]
#include "storage/checkpoint.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/threads.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;

namespace {

using clk = std::chrono::steady_clock;
double sec_since(clk::time_point t) {
  return std::chrono::duration<double>(clk::now() - t).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

zf::model_config gpt2_124m() {
  zf::model_config m;
  m.n_layer = 12;
  m.n_head = 12;
  m.n_embd = 768;
  m.n_positions = 1024;
  m.vocab_size = 50257;
  return m;
}

// O_DIRECT pwrite of `bytes` (rounded up to 4 KiB) in 1 MiB blocks, fsync. Seconds.
double raw_write(const fs::path& p, std::size_t bytes) {
  constexpr std::size_t block = 1u << 20;
  bytes = (bytes + 4095) / 4096 * 4096;
  auto* buf = static_cast<char*>(std::aligned_alloc(4096, block));
  for (std::size_t i = 0; i < block; ++i) buf[i] = static_cast<char>(i * 131 + 7);
  auto t0 = clk::now();
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
  if (fd < 0) zf::fail("raw write: cannot open {} with O_DIRECT: {}", p.string(), strerror(errno));
  for (std::size_t off = 0; off < bytes; off += block) {
    const std::size_t n = std::min(block, bytes - off);
    if (::pwrite(fd, buf, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n))
      zf::fail("raw write to {} failed: {}", p.string(), strerror(errno));
  }
  if (::fsync(fd) != 0) zf::fail("fsync {} failed", p.string());
  ::close(fd);
  const double s = sec_since(t0);
  std::free(buf);
  fs::remove(p);
  return s;
}

// Our write with `writers` threads, each its slice of an even partition. Seconds.
double our_write(const fs::path& root, int step, const zf::param_layout& L, const float* p,
                 const float* m, const float* v, int writers) {
  auto t0 = clk::now();
  const fs::path tmp = st::begin_checkpoint(root, step);
  const std::size_t chunk = (L.total + writers - 1) / writers;
  std::vector<std::vector<st::fragment>> per(writers);
  std::vector<std::thread> th;
  for (int r = 0; r < writers; ++r)
    th.emplace_back([&, r] {
      const std::size_t b = std::min(L.total, r * chunk), e = std::min(L.total, b + chunk);
      per[r] = st::write_shard(tmp, r, L, {b, e, p + b, m + b, v + b});
    });
  for (auto& t : th) t.join();
  std::vector<st::fragment> all;
  for (auto& f : per) all.insert(all.end(), f.begin(), f.end());
  const fs::path d = st::commit_checkpoint(root, tmp, L, all, {step, writers, 1, "", {}}, 1);
  const double s = sec_since(t0);
  fs::remove_all(d);
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  fs::path dir = "build/bench-ckpt";
  int reps = 3, steps = 6, threads = 2;
  bool train = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) zf::fail("{} needs a value", a);
      return argv[++i];
    };
    if (a == "--dir")
      dir = next();
    else if (a == "--reps")
      reps = std::max(1, std::stoi(next()));
    else if (a == "--steps")
      steps = std::max(1, std::stoi(next()));
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--skip-train")
      train = false;
    else
      zf::fail("unknown option {} (--dir D --reps N --steps N --threads N --skip-train)", a);
  }
  const bool made_dir = !fs::exists(dir);
  fs::create_directories(dir);
  const fs::path work = dir / fmt::format("bench-{}", ::getpid());
  fs::create_directories(work);
  struct cleanup {
    fs::path work, dir;
    bool made;
    ~cleanup() {
      std::error_code ec;
      fs::remove_all(work, ec);
      if (made) fs::remove(dir, ec);  // only if empty
    }
  } clean{work, dir, made_dir};

  const zf::model_config mc = gpt2_124m();
  const zf::param_layout L = zf::layout_of(mc);
  const std::size_t bytes = 3 * L.total * sizeof(float);
  std::cout << fmt::format("state: {} parameters + 2 moments = {:.3f} GB, into {}\n", L.total,
                           bytes / 1e9, work.string());

  double fraction = 0;
  {
    std::vector<float> p(L.total), m(L.total), v(L.total);
    for (std::size_t i = 0; i < L.total; ++i) {
      p[i] = 0.02f * std::sin(float(i));
      m[i] = 1e-3f * std::cos(float(i));
      v[i] = 1e-6f * float(i % 1000);
    }
    std::vector<double> raw, one, two;
    int step = 1;
    for (int r = 0; r < reps; ++r) {
      for (int k = 0; k < 3; ++k) {  // rotate the order each repetition
        switch ((k + r) % 3) {
          case 0:
            raw.push_back(bytes / raw_write(work / "raw.bin", bytes) / 1e9);
            break;
          case 1:
            one.push_back(bytes / our_write(work, step++, L, p.data(), m.data(), v.data(), 1) /
                          1e9);
            break;
          case 2:
            two.push_back(bytes / our_write(work, step++, L, p.data(), m.data(), v.data(), 2) /
                          1e9);
            break;
        }
      }
      std::cout << fmt::format(
          "rep {}: raw O_DIRECT {:.3f} GB/s, ours 1 writer {:.3f} GB/s, "
          "2 writers {:.3f} GB/s\n",
          r + 1, raw.back(), one.back(), two.back());
    }
    const double mr = median(raw), m1 = median(one), m2 = median(two);
    const double best = std::max(m1, m2);
    fraction = best / mr;
    std::cout << fmt::format(
        "bandwidth (median of {}): raw {:.3f} GB/s; ours 1 writer {:.3f} GB/s ({:.2f}), "
        "2 writers {:.3f} GB/s ({:.2f}); best / raw = {:.3f}\n",
        reps, mr, m1, m1 / mr, m2, m2 / mr, fraction);
  }

  double overhead = 0;
  if (train) {
    zf::kernels::set_num_threads(threads);
    const int B = 4, T = 256;
    zf::transformer model(mc);
    model.init_weights(0);
    zf::run_config t;
    t.optimizer.lr = 3e-4;
    zf::adamw opt(model.layout(), 0, L.total, t.optimizer);
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> tok(0, mc.vocab_size - 1);
    std::vector<int> in(std::size_t(B) * T), tg(std::size_t(B) * T);
    std::vector<float> sp(L.total), sm(L.total), sv(L.total);  // the snapshot
    int opt_step = 0;
    auto one_step = [&] {
      for (auto& x : in) x = tok(rng);
      for (auto& x : tg) x = tok(rng);
      model.zero_grad();
      model.forward_backward(in.data(), tg.data(), B, T);
      opt.step(model.params().data(), model.grads().data(), t.optimizer.lr, ++opt_step, 1.0f);
    };
    struct phase_result {
      double per_step = 0, snap = 0, tail = 0, writer_cpu = 0;
      int steps = 0, writes = 0;
    };
    // n steps; with ckpt, a snapshot + background save after every step whose previous save has
    // finished. per_step excludes the wait for the last write (reported as tail).
    auto phase = [&](bool ckpt, int n) {
      phase_result r;
      r.steps = n;
      std::thread writer;
      std::atomic<bool> busy{false};
      std::string err;
      double cpu = 0;  // writer thread CPU seconds (copy into write buffers + CRC + syscalls)
      auto t0 = clk::now();
      for (int i = 0; i < n; ++i) {
        one_step();
        if (ckpt && !busy.load()) {
          if (writer.joinable()) writer.join();
          auto ts = clk::now();
          std::memcpy(sp.data(), model.params().data(), L.total * sizeof(float));
          std::memcpy(sm.data(), opt.m().data(), L.total * sizeof(float));
          std::memcpy(sv.data(), opt.v().data(), L.total * sizeof(float));
          r.snap += sec_since(ts);
          busy = true;
          ++r.writes;
          writer = std::thread([&, s = opt_step] {
            timespec a{}, b{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
            try {
              st::checkpoint_view c;
              c.step = s;
              c.layout = &L;
              c.params = sp.data();
              c.exp_avg = sm.data();
              c.exp_avg_sq = sv.data();
              c.state = {{"step", s}};
              st::save_checkpoint(work / "train", c, 1);
            } catch (const std::exception& e) {
              err = e.what();
            }
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
            cpu += double(b.tv_sec - a.tv_sec) + 1e-9 * double(b.tv_nsec - a.tv_nsec);
            busy = false;
          });
        }
      }
      r.per_step = sec_since(t0) / n;
      auto tj = clk::now();
      if (writer.joinable()) writer.join();
      r.tail = sec_since(tj);
      r.writer_cpu = cpu;
      if (!err.empty()) zf::fail("checkpoint write failed: {}", err);
      return r;
    };
    auto tw = clk::now();
    one_step();  // plans activations, warms caches
    std::cout << fmt::format("training gpt2-124M B={} T={} threads={}: warm-up step {:.2f} s\n", B,
                             T, threads, sec_since(tw));
    // never / every / never: the two halves without checkpoints bracket the run with them, so a
    // drift in the shared machine's speed affects both sides alike
    const auto n1 = phase(false, steps / 2);
    const auto e = phase(true, steps);
    const auto n2 = phase(false, steps - steps / 2);
    const double never = (n1.per_step * n1.steps + n2.per_step * n2.steps) / (n1.steps + n2.steps);
    const double frac = (e.per_step - never) / never;
    overhead = std::clamp(frac, 0.0, 1.0);
    std::cout << fmt::format(
        "step time: never {:.3f} s/step ({:.3f} before, {:.3f} after); every step {:.3f} s/step "
        "({} checkpoints in {} steps); overhead {:.1f}%\n",
        never, n1.per_step, n2.per_step, e.per_step, e.writes, e.steps, 100 * frac);
    std::cout << fmt::format(
        "per checkpoint: snapshot copy {:.2f} s on the training thread, writer thread CPU {:.2f} "
        "s; the last write needed {:.2f} s after its step\n",
        e.writes ? e.snap / e.writes : 0.0, e.writes ? e.writer_cpu / e.writes : 0.0, e.tail);
  }
  std::cout << fmt::format("checkpoint bandwidth_fraction={:.3f} step_overhead={:.3f}\n",
                           std::min(1.0, fraction), overhead)
            << std::flush;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_checkpoint: error: " << e.what() << "\n";
  return 1;
}
