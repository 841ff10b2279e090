#pragma once
// The GEMM tuning table (issue 16): which library (gemm_lib.hpp) runs a GEMM of a given
// precision, transposes and shape on this CPU with this many threads, measured once and cached
// in a text file (`zeroflow tune gemm`, or lazily at a shape's first GEMM).
//
// Invariants:
// - A library is only ever chosen after its result on the shape matched a float64 reference
//   (sampled outputs, on the operands rounded to the precision) within 1e-4 of the sum of
//   |a||b| products: a library that computes wrong numbers on this CPU is never picked.
// - Keys: CPU identity (model name and the ISA flags the libraries dispatch on), threads,
//   precision, transposes, m (rounded up to a power of two above 64, so serving's many prefill
//   lengths share entries), n, k. A table from another CPU is foreign; a table that does not
//   parse is corrupt; both are ignored with a warning and replaced at the next save.
// - One library per precision in a process (process_gemm_lib): the entries' per-shape bests are
//   reported, but a process does not alternate libraries (their thread pools fight). The choice
//   is over the shapes the process has run, so it settles during the first step (a new shape
//   may move it) and a table shared by several models gives each its own library.
// - Mode off (the default of a library user, the tests): no table, the default libraries
//   (OpenBLAS for f32 and f16, oneDNN for bf16), so results do not depend on timing. The CLI turns
//   lazy tuning on (ZF_GEMM_TUNING=off|cached|lazy overrides).
#include <string>
#include <vector>

#include "kernels/gemm_lib.hpp"

namespace zf::kernels {

enum class gemm_tuning : std::uint8_t { off, cached, lazy };
bool parse_gemm_tuning(const char* s, gemm_tuning& out) noexcept;

struct gemm_trial {
  gemm_lib lib = gemm_lib::openblas;
  double gflops = 0;   // best of a few timed runs
  double max_err = 0;  // largest |c - ref| / sum |a||b| over the sampled outputs
  bool ok = false;     // max_err within tolerance
};
struct gemm_entry {
  int threads = 1;
  precision prec = precision::f32;
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;  // m bucketed
  gemm_lib best = gemm_lib::openblas;
  std::vector<gemm_trial> trials;
};

// $ZF_CACHE_DIR, else $XDG_CACHE_HOME/zeroflow, else $HOME/.cache/zeroflow; + /gemm_table.txt.
std::string default_gemm_table_path();
// "model name | flags" of this CPU (the flags among avx2, avx512f, avx512_bf16, avx512_fp16,
// amx_bf16, amx_tile that it has), and " | OPENBLAS_CORETYPE=X" when that is set.
std::string cpu_identity();
int gemm_bucket_m(int m) noexcept;

// Sets the process's mode and table file and loads the table (not for off). Returns warnings for
// a corrupt, foreign or unreadable table (then ignored). Thread-safe.
std::vector<std::string> configure_gemm_tuning(gemm_tuning mode, const std::string& path);
gemm_tuning gemm_tuning_mode() noexcept;
gemm_lib default_gemm_lib(precision p) noexcept;
// The library for one GEMM. Lazy mode first measures the shape if the table lacks it. Then the
// process's library of precision p (process_gemm_lib): one per precision, not per shape, because
// alternating libraries makes their spinning thread pools starve each other (measured).
gemm_lib choose_gemm_lib(precision p, bool trans_a, bool trans_b, int m, int n, int k);
// The library of precision p for this process: the one with the least total time over the
// table's entries of p at this thread count that the process has run (all before it ran any) (each
// entry's best is still recorded and printed); the default with no entries or tuning off.
gemm_lib process_gemm_lib(precision p);
// Measures every library available for p on the (bucketed) shape, records the entry in the
// table and saves the file when one is set. Failures of one library (an exception, a wrong
// result) mark its trial not ok; the best is the fastest ok trial (OpenBLAS when none is).
gemm_entry tune_gemm(precision p, bool trans_a, bool trans_b, int m, int n, int k);
std::vector<gemm_entry> gemm_table_entries();
// Drops every entry (tests).
void clear_gemm_table();

// The file's text for `cpu`, and its parse: false for a foreign table (another cpu line); throws
// kernel_error naming the line for anything malformed.
std::string format_gemm_table(const std::string& cpu, const std::vector<gemm_entry>& entries);
bool parse_gemm_table(const std::string& text, const std::string& cpu,
                      std::vector<gemm_entry>& out);

// Test hook: while set, library l's tuning results are corrupted (one output off by 1), as a
// library with a broken kernel would be.
void set_gemm_tuning_fault(gemm_lib l, bool on) noexcept;

}  // namespace zf::kernels
