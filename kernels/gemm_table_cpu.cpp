// The GEMM tuning table (gemm_table.hpp): measurement with a float64 check, the text file, and
// the process-wide table behind choose_gemm_lib. One mutex guards the table; a lazy tune holds
// it while it measures, so two threads never time libraries against each other.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/gemm_backends.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"

namespace zf::kernels {
namespace {

constexpr const char* k_header = "zeroflow gemm table v1";
constexpr double k_tolerance = 1e-4;
constexpr int k_samples = 64;

using key_t = std::tuple<int, int, int, int, int, int, int>;  // threads prec ta tb m n k
key_t key_of(const gemm_entry& e) {
  return {e.threads, int(e.prec), e.trans_a, e.trans_b, e.m, e.n, e.k};
}

struct table_state {
  std::mutex mu;
  gemm_tuning mode = gemm_tuning::off;
  std::string path;
  std::map<key_t, gemm_entry> entries;
  std::set<key_t> used;  // the shapes this process has run (choose_gemm_lib)
  // process_lib_locked's answers by (precision, threads), dropped whenever entries change: the
  // choice is asked at every GEMM, the table changes only when a shape is measured or loaded
  std::map<std::pair<int, int>, gemm_lib> chosen;
};
table_state& table() {
  static table_state t;
  return t;
}
std::atomic<gemm_tuning> g_mode{gemm_tuning::off};
std::atomic<int> g_fault{-1};

float rounded(precision p, float x) {
  if (p == precision::bf16) return bf16_to_f32(f32_to_bf16(x));
  if (p == precision::f16) return f16_to_f32(f32_to_f16(x));
  return x;
}

// One library on the shape: best time of a few runs, and the sampled error against float64.
gemm_trial measure(gemm_lib l, precision p, bool ta, bool tb, int m, int n, int k,
                   const std::vector<float>& a, const std::vector<float>& b,
                   std::vector<float>& c) {
  gemm_trial t;
  t.lib = l;
  const int lda = ta ? m : k, ldb = tb ? k : n;
  try {
    double best = 1e30, spent = 0;
    for (int rep = 0; rep < 4 && (rep < 2 || spent < 0.3); ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::gemm_run(l, p, ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), n);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep > 0) best = std::min(best, s);  // the first run pays the JIT / page faults
      spent += s;
    }
    t.gflops = 2.0 * m * n * k / best / 1e9;
  } catch (const std::exception&) {
    return t;  // not ok
  }
  if (g_fault.load() == int(l)) c[0] += 1.0f;
  std::uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < k_samples; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const int r = i == 0 ? 0 : int((s >> 33) % std::uint64_t(m));
    const int col = i == 0 ? 0 : int((s >> 13) % std::uint64_t(n));
    double ref = 0, mag = 0;
    for (int q = 0; q < k; ++q) {
      const double x = rounded(p, ta ? a[std::size_t(q) * lda + r] : a[std::size_t(r) * lda + q]);
      const double y =
          rounded(p, tb ? b[std::size_t(col) * ldb + q] : b[std::size_t(q) * ldb + col]);
      ref += x * y;
      mag += std::fabs(x * y);
    }
    const double err = std::fabs(c[std::size_t(r) * n + col] - ref) / (mag + 1e-30);
    t.max_err = std::max(t.max_err, std::isfinite(err) ? err : 1e30);
  }
  t.ok = t.max_err <= k_tolerance;
  return t;
}

void save_locked(table_state& t) {
  if (t.path.empty()) return;
  std::vector<gemm_entry> all;
  for (auto& [k, e] : t.entries) all.push_back(e);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(t.path).parent_path(), ec);
  const std::string tmp = t.path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << format_gemm_table(cpu_identity(), all);
    if (!f) return;  // a read-only cache costs re-tuning next time, nothing else
  }
  std::filesystem::rename(tmp, t.path, ec);
}

gemm_entry tune_locked(table_state& t, precision p, bool ta, bool tb, int m, int n, int k) {
  gemm_entry e;
  e.threads = num_threads();
  e.prec = p;
  e.trans_a = ta;
  e.trans_b = tb;
  e.m = gemm_bucket_m(m);
  e.n = n;
  e.k = k;
  std::vector<float> a(std::size_t(e.m) * k), b(std::size_t(k) * n), c(std::size_t(e.m) * n);
  std::uint64_t s = 12345;
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      x = float(int((s >> 40) % 2001) - 1000) / 1000.0f;
    }
  };
  fill(a);
  fill(b);
  double best = -1;
  for (int i = 0; i < gemm_lib_count; ++i) {
    const gemm_lib l = gemm_lib(i);
    if (!gemm_lib_available(l, p)) continue;
    // the previous library's workers still spin for up to ~0.1 s (OpenBLAS): let them sleep, or
    // this one is timed on half the cores
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    e.trials.push_back(measure(l, p, ta, tb, e.m, n, k, a, b, c));
    const gemm_trial& tr = e.trials.back();
    if (tr.ok && tr.gflops > best) best = tr.gflops, e.best = l;
  }
  if (best < 0) e.best = gemm_lib::openblas;
  t.entries[key_of(e)] = e;
  t.chosen.clear();
  save_locked(t);
  return e;
}

// The one library of precision p for this process: the least total time over the table's
// entries of p at these threads that this process has run (all of them before it has run any;
// each entry's FLOPs over the library's measured rate; a library without a passing trial on some
// entry is out), else the default. Not over the whole table: a table that also holds a bigger
// model's shapes made a small model run the big one's library (tiny's fp32 step 287 -> 402 ms). One
// per process because the libraries' thread pools fight: OpenBLAS's workers spin ~0.1 s after a
// call and libgomp's 3 ms, so alternating libraries shape by shape starved each (the tiny shape's
// fp32 step took 970 ms with per-shape choices against 400 ms on one library).
gemm_lib compute_process_lib(const table_state& t, precision p, int threads) {
  double total[gemm_lib_count] = {};
  bool usable[gemm_lib_count];
  int seen = 0;
  for (int i = 0; i < gemm_lib_count; ++i) usable[i] = gemm_lib_available(gemm_lib(i), p);
  const bool ran_some = std::any_of(t.used.begin(), t.used.end(), [&](const key_t& k) {
    return std::get<0>(k) == threads && std::get<1>(k) == int(p) && t.entries.count(k);
  });
  for (const auto& [key, e] : t.entries) {
    if (e.prec != p || e.threads != threads) continue;
    if (ran_some && !t.used.count(key)) continue;
    ++seen;
    const double flops = 2.0 * e.m * e.n * e.k;
    for (int i = 0; i < gemm_lib_count; ++i) {
      const auto tr = std::find_if(e.trials.begin(), e.trials.end(),
                                   [&](const gemm_trial& x) { return int(x.lib) == i; });
      if (tr == e.trials.end() || !tr->ok || tr->gflops <= 0)
        usable[i] = false;
      else
        total[i] += flops / (tr->gflops * 1e9);
    }
  }
  gemm_lib best = default_gemm_lib(p);
  if (seen == 0) return best;
  double best_t = usable[int(best)] ? total[int(best)] : 1e300;
  for (int i = 0; i < gemm_lib_count; ++i)
    if (usable[i] && total[i] < best_t) best_t = total[i], best = gemm_lib(i);
  return best;
}

gemm_lib process_lib_locked(table_state& t, precision p, int threads) {
  const auto key = std::make_pair(int(p), threads);
  if (auto it = t.chosen.find(key); it != t.chosen.end()) return it->second;
  return t.chosen[key] = compute_process_lib(t, p, threads);
}

}  // namespace

bool parse_gemm_tuning(const char* s, gemm_tuning& out) noexcept {
  const char* names[] = {"off", "cached", "lazy"};
  for (int i = 0; i < 3; ++i)
    if (std::strcmp(s, names[i]) == 0) return out = gemm_tuning(i), true;
  return false;
}

std::string default_gemm_table_path() {
  namespace fs = std::filesystem;
  if (const char* d = std::getenv("ZF_CACHE_DIR"); d && *d) return (fs::path(d) / "gemm_table.txt");
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return fs::path(x) / "zeroflow" / "gemm_table.txt";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/tmp") / ".cache" / "zeroflow" / "gemm_table.txt";
}

std::string cpu_identity() {
  static const std::string id = [] {
    std::ifstream f("/proc/cpuinfo");
    std::string line, model = "unknown", flags;
    while (std::getline(f, line)) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
      const std::string val = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
      if (key == "model name" && model == "unknown") model = val;
      if (key == "flags" && flags.empty()) flags = " " + val + " ";
    }
    std::string id = model + " |";
    for (const char* fl : {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"})
      if (flags.find(std::string(" ") + fl + " ") != std::string::npos) id += std::string(" ") + fl;
    // OpenBLAS told to run another core's kernels is another machine to the table (Haswell's
    // AVX2 kernels run at about half this CPU's AVX-512 speed)
    if (const char* ct = std::getenv("OPENBLAS_CORETYPE"); ct && *ct)
      id += std::string(" | OPENBLAS_CORETYPE=") + ct;
    return id;
  }();
  return id;
}

int gemm_bucket_m(int m) noexcept {
  if (m <= 64) return m;
  int b = 64;
  while (b < m) b *= 2;
  return b;
}

std::vector<std::string> configure_gemm_tuning(gemm_tuning mode, const std::string& path) {
  table_state& t = table();
  std::lock_guard lock(t.mu);
  std::vector<std::string> warnings;
  t.mode = mode;
  t.path = mode == gemm_tuning::off ? "" : path;
  t.entries.clear();
  t.used.clear();
  t.chosen.clear();
  g_mode = mode;
  if (t.path.empty() || !std::filesystem::exists(t.path)) return warnings;
  std::ifstream f(t.path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::vector<gemm_entry> got;
  try {
    if (!parse_gemm_table(ss.str(), cpu_identity(), got)) {
      warnings.push_back("GEMM table " + t.path +
                         " was measured on another CPU: ignored (it is re-measured here)");
      return warnings;
    }
  } catch (const std::exception& e) {
    warnings.push_back("GEMM table " + t.path + " is corrupt (" + e.what() +
                       "): ignored (it is re-measured here)");
    return warnings;
  }
  for (auto& e : got) t.entries[key_of(e)] = e;
  t.chosen.clear();
  return warnings;
}

gemm_tuning gemm_tuning_mode() noexcept {
  return g_mode.load(std::memory_order_relaxed);
}

gemm_lib default_gemm_lib(precision p) noexcept {
  return p == precision::bf16 ? gemm_lib::onednn : gemm_lib::openblas;
}

gemm_lib choose_gemm_lib(precision p, bool ta, bool tb, int m, int n, int k) {
  if (g_mode.load(std::memory_order_relaxed) == gemm_tuning::off) return default_gemm_lib(p);
  table_state& t = table();
  std::lock_guard lock(t.mu);
  const int threads = num_threads();
  const key_t key{threads, int(p), ta, tb, gemm_bucket_m(m), n, k};
  if (t.mode == gemm_tuning::lazy && !t.entries.count(key)) {
    static std::once_flag said;  // a slow first step deserves a word, once per process
    std::call_once(said, [&] {
      std::cerr << "zeroflow: timing the GEMM libraries at this run's new shapes (once per "
                   "machine; saved to "
                << t.path << ")\n";
    });
    tune_locked(t, p, ta, tb, m, n, k);
  }
  if (t.used.insert(key).second) t.chosen.clear();  // a new shape may move the choice
  return process_lib_locked(t, p, threads);
}

gemm_lib process_gemm_lib(precision p) {
  if (g_mode.load(std::memory_order_relaxed) == gemm_tuning::off) return default_gemm_lib(p);
  table_state& t = table();
  std::lock_guard lock(t.mu);
  return process_lib_locked(t, p, num_threads());
}

gemm_entry tune_gemm(precision p, bool ta, bool tb, int m, int n, int k) {
  if (m <= 0 || n <= 0 || k <= 0) throw kernel_error("tune_gemm: m, n and k must be positive");
  table_state& t = table();
  std::lock_guard lock(t.mu);
  return tune_locked(t, p, ta, tb, m, n, k);
}

std::vector<gemm_entry> gemm_table_entries() {
  table_state& t = table();
  std::lock_guard lock(t.mu);
  std::vector<gemm_entry> out;
  for (auto& [k, e] : t.entries) out.push_back(e);
  return out;
}

void clear_gemm_table() {
  table_state& t = table();
  std::lock_guard lock(t.mu);
  t.entries.clear();
  t.used.clear();
  t.chosen.clear();
}

std::string format_gemm_table(const std::string& cpu, const std::vector<gemm_entry>& entries) {
  std::ostringstream o;
  o << k_header << "\ncpu " << cpu << "\n";
  for (const auto& e : entries) {
    o << e.threads << ' ' << precision_name(e.prec) << ' ' << (e.trans_a ? 'T' : 'N')
      << (e.trans_b ? 'T' : 'N') << ' ' << e.m << ' ' << e.n << ' ' << e.k << ' '
      << gemm_lib_name(e.best);
    for (const auto& tr : e.trials)
      o << ' ' << gemm_lib_name(tr.lib) << ':' << tr.gflops << ':' << tr.max_err << ':'
        << (tr.ok ? "ok" : "wrong");
    o << '\n';
  }
  return o.str();
}

bool parse_gemm_table(const std::string& text, const std::string& cpu,
                      std::vector<gemm_entry>& out) {
  std::istringstream in(text);
  std::string line;
  int no = 0;
  auto bad = [&](const std::string& why) {
    throw kernel_error("line " + std::to_string(no) + ": " + why);
  };
  if (++no, !std::getline(in, line) || line != k_header) bad("not a zeroflow gemm table header");
  if (++no, !std::getline(in, line) || line.rfind("cpu ", 0) != 0) bad("no cpu line");
  if (line.substr(4) != cpu) return false;
  while (++no, std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    gemm_entry e;
    std::string prec, tr, best, trial;
    if (!(ls >> e.threads >> prec >> tr >> e.m >> e.n >> e.k >> best)) bad("too few fields");
    if (!parse_precision(prec.c_str(), e.prec)) bad("unknown precision '" + prec + "'");
    if (tr.size() != 2 || (tr[0] != 'N' && tr[0] != 'T') || (tr[1] != 'N' && tr[1] != 'T'))
      bad("transposes must be NN, NT, TN or TT, not '" + tr + "'");
    e.trans_a = tr[0] == 'T';
    e.trans_b = tr[1] == 'T';
    if (e.threads <= 0 || e.m <= 0 || e.n <= 0 || e.k <= 0) bad("sizes must be positive");
    if (!parse_gemm_lib(best.c_str(), e.best)) bad("unknown library '" + best + "'");
    while (ls >> trial) {
      gemm_trial t;
      char lib[32] = {}, verdict[16] = {};
      if (std::sscanf(trial.c_str(), "%31[a-z]:%lf:%lf:%15s", lib, &t.gflops, &t.max_err,
                      verdict) != 4 ||
          !parse_gemm_lib(lib, t.lib))
        bad("bad trial '" + trial + "'");
      t.ok = std::strcmp(verdict, "ok") == 0;
      e.trials.push_back(t);
    }
    const bool chosen_ok = std::any_of(e.trials.begin(), e.trials.end(), [&](const gemm_trial& t) {
      return t.lib == e.best && t.ok;
    });
    if (!chosen_ok && e.best != gemm_lib::openblas)
      bad(std::string("the chosen library ") + gemm_lib_name(e.best) + " has no passing trial");
    out.push_back(e);
  }
  return true;
}

void set_gemm_tuning_fault(gemm_lib l, bool on) noexcept {
  g_fault = on ? int(l) : -1;
}

}  // namespace zf::kernels
