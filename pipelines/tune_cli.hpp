#pragma once
// `zeroflow tune gemm` (issue 16): measures every GEMM library at the shapes of the configured
// model's training step (forward, input gradients, weight gradients, the LM head) for the asked
// precisions, checks each against float64, prints GFLOP/s per library and the choice, and saves
// the tuning table (kernels/gemm_table.hpp) that every later zeroflow command reads.
//   tune gemm [--config F] [--set k=v] [--precision f32,bf16] [--threads N] [--table PATH]
#include <cstdint>

namespace CLI {
class App;
}

namespace zf {
namespace kernels {
enum class gemm_tuning : std::uint8_t;
}

void add_tune_subcommand(CLI::App& app);
// Runs it if it was parsed: true if it ran. Throws zf::error on failure.
bool run_tune_subcommand();
// Every command's GEMM tuning, before it runs: ZF_GEMM_TUNING (off | cached | lazy), else
// `fallback` (the CLI: lazy for train, cached for the rest), over the default table (ZF_CACHE_DIR,
// XDG_CACHE_HOME or ~/.cache, zeroflow/); a corrupt or foreign table is said on stderr and ignored.
void configure_gemm_tuning_from_env(kernels::gemm_tuning fallback);

}  // namespace zf
