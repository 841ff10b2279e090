#include "pipelines/tune_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <set>
#include <sstream>
#include <tuple>

#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_spec.hpp"

namespace zf {
namespace {

namespace k = zf::kernels;

struct tune_args {
  std::string config_file, table, precisions = "f32,bf16";
  std::vector<std::string> sets;
  int threads = 0;
};
tune_args g_args;
CLI::App* g_tune = nullptr;
CLI::App* g_gemm = nullptr;

struct shape {
  const char* what;
  const char* pass;  // fwd, dX (input gradient) or dW (weight gradient)
  bool ta, tb;
  int m, n, k;
};

// The GEMMs of one training step of spec over bt tokens (block.cpp, model.cpp): per linear
// [in, out] the forward (NN bt x out x in), the input gradient (NT bt x in x out) and the weight
// gradient (TN in x out x bt); the head's with its [vocab, hidden] weight.
std::vector<shape> step_shapes(const model_spec& s, int bt) {
  const int C = s.hidden, V = s.vocab_size;
  const std::tuple<const char*, int, int> linears[] = {{"qkv", C, s.qkv_dim()},
                                                       {"attn out", s.q_dim(), C},
                                                       {"mlp up", C, s.up_dim()},
                                                       {"mlp down", s.intermediate, C}};
  std::vector<shape> out;
  for (const auto& [what, in, o] : linears) {
    out.push_back({what, "fwd", false, false, bt, o, in});
    out.push_back({what, "dX", false, true, bt, in, o});
    out.push_back({what, "dW", true, false, in, o, bt});
  }
  out.push_back({"head", "fwd", false, true, bt, V, C});
  out.push_back({"head", "dX", false, false, bt, C, V});
  out.push_back({"head", "dW", true, false, V, C, bt});
  std::set<std::tuple<int, int, int, int, int>> seen;
  std::vector<shape> unique;
  for (const auto& x : out)
    if (seen.insert({x.ta, x.tb, x.m, x.n, x.k}).second) unique.push_back(x);
  return unique;
}

int run_tune() {
  const run_config cfg = load_config(g_args.config_file, g_args.sets);
  const model_spec spec = spec_of(cfg.model);
  const int bt = cfg.train.batch_size * cfg.train.seq_len;
  k::set_num_threads(g_args.threads > 0 ? g_args.threads : cfg.train.threads);
  std::vector<k::precision> precs;
  std::stringstream ps(g_args.precisions);
  for (std::string p; std::getline(ps, p, ',');) {
    k::precision x;
    if (!k::parse_precision(p.c_str(), x))
      fail("--precision: expected f32, bf16 or f16 (comma-separated), got '{}'", p);
    precs.push_back(x);
  }
  const std::string path = g_args.table.empty() ? k::default_gemm_table_path() : g_args.table;
  for (const auto& w : k::configure_gemm_tuning(k::gemm_tuning::cached, path))
    std::cerr << "zeroflow: warning: " << w << "\n";
  std::cout << fmt::format(
      "GEMM tuning: {} | {} threads | model {} layers x {} hidden, vocab {}"
      " | {} tokens per micro-batch\n",
      k::cpu_identity(), k::num_threads(), spec.n_layer, spec.hidden, spec.vocab_size, bt);
  std::cout << "| precision | GEMM | m x n x k | op | openblas | onednn | blis | chosen |\n"
               "|---|---|---|---|---|---|---|---|\n";
  for (k::precision p : precs)
    for (const shape& x : step_shapes(spec, bt)) {
      const k::gemm_entry e = k::tune_gemm(p, x.ta, x.tb, x.m, x.n, x.k);
      std::string cells[k::gemm_lib_count] = {"-", "-", "-"};
      for (const auto& t : e.trials)
        cells[int(t.lib)] =
            t.ok ? fmt::format("{:.0f}", t.gflops) : fmt::format("wrong (err {:.1e})", t.max_err);
      std::cout << fmt::format("| {} | {} {} | {}x{}x{} | {}{} | {} | {} | {} | {} |\n",
                               k::precision_name(p), x.what, x.pass, x.m, x.n, x.k,
                               x.ta ? 'T' : 'N', x.tb ? 'T' : 'N', cells[0], cells[1], cells[2],
                               k::gemm_lib_name(e.best));
    }
  for (k::precision p : precs)
    std::cout << fmt::format(
        "{} GEMMs run on {} (one library per process: the least total time "
        "over the table's shapes; libraries alternating shape by shape "
        "starve each other's spinning threads)\n",
        k::precision_name(p), k::gemm_lib_name(k::process_gemm_lib(p)));
  std::cout << "GFLOP/s, best of a few runs; table saved to " << path << "\n";
  return 0;
}

}  // namespace

void add_tune_subcommand(CLI::App& app) {
  g_tune = app.add_subcommand("tune", "measure and cache kernel choices for this machine");
  g_tune->require_subcommand(1);
  g_gemm = g_tune->add_subcommand(
      "gemm", "time OpenBLAS, oneDNN and BLIS at the model's GEMM shapes; save the choices");
  g_gemm
      ->add_option("--config", g_args.config_file,
                   "TOML config file (model, train.batch_size,"
                   " train.seq_len)")
      ->check(CLI::ExistingFile);
  g_gemm->add_option("--set", g_args.sets, "override one key");
  g_gemm->add_option("--precision", g_args.precisions, "comma-separated: f32, bf16, f16");
  g_gemm->add_option("--threads", g_args.threads, "compute threads (0: train.threads)")
      ->check(CLI::Range(0, 1024));
  g_gemm->add_option("--table", g_args.table, "table file (default: the user's cache folder)");
}

bool run_tune_subcommand() {
  if (!g_tune || !*g_tune) return false;
  run_tune();
  return true;
}

void configure_gemm_tuning_from_env(k::gemm_tuning fallback) {
  k::gemm_tuning mode = fallback;
  if (const char* e = std::getenv("ZF_GEMM_TUNING"); e && *e && !k::parse_gemm_tuning(e, mode))
    fail("ZF_GEMM_TUNING: expected off, cached or lazy, got '{}'", e);
  for (const auto& w : k::configure_gemm_tuning(mode, k::default_gemm_table_path()))
    std::cerr << "zeroflow: warning: " << w << "\n";
}

}  // namespace zf
