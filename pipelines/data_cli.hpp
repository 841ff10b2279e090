#pragma once
// `zeroflow data analyze --metric vocab_rarity|custom [--values FILE] --out DIR [--config FILE]
// [--set key=value ...] [--threads N]`: one pass over the configured corpus (data.corpus, cut
// into the fixed windows of train.seq_len a curriculum samples: storage/sample_metrics) that
// writes the metric of every sample and the samples sorted by it as index files in DIR.
namespace CLI {
class App;
}

namespace zf {

void add_data_subcommand(CLI::App& app);
// Runs `data analyze` if it was parsed: true if it ran. Throws zf::error on failure.
bool run_data_subcommand();

}  // namespace zf
