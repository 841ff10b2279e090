#include "pipelines/data_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>

#include "pipelines/pipeline.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/blend.hpp"
#include "storage/dataset.hpp"
#include "storage/sample_metrics.hpp"

namespace zf {
namespace {

struct analyze_flags {
  std::string config_file, corpus, metric, values, out;
  std::vector<std::string> sets;
  unsigned threads = 0;
};
analyze_flags g_flags;
CLI::App* g_analyze = nullptr;

void analyze(const analyze_flags& f) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> sets = f.sets;
  if (!f.corpus.empty()) sets.insert(sets.begin(), "data.corpus=" + f.corpus);
  run_config cfg = load_config(f.config_file, sets);
  if (f.metric != "vocab_rarity" && f.metric != "custom")
    fail(
        "data analyze --metric: expected vocab_rarity or custom, got '{}' (seqlen needs no "
        "index: a seqlen curriculum truncates every sample)",
        f.metric);
  if ((f.metric == "custom") != !f.values.empty())
    fail("data analyze: --values FILE goes with --metric custom, and only with it");
  auto [tok, tok_id] = open_tokenizer(cfg);
  storage::corpus_checks checks;
  checks.max_invalid_utf8 = cfg.data.max_invalid_utf8;
  const auto shard_path = storage::prepare_data(cfg.data, data_dir(cfg), tok, tok_id, checks);
  const auto shard = storage::token_shard::open(shard_path);
  // the train head exactly as training splits it (the validation tail is never a sample)
  const std::size_t train_tokens = storage::dataset(storage::token_shard::open(shard_path),
                                                    cfg.data.val_fraction, cfg.train.seq_len)
                                       .train_tokens();
  const std::size_t n = storage::sample_count(train_tokens, cfg.train.seq_len);
  if (n == 0)
    fail("data analyze: {} has no whole window of train.seq_len={} tokens in its train head",
         shard_path.string(), cfg.train.seq_len);
  const std::vector<double> values =
      f.metric == "custom"
          ? storage::read_custom_metric(f.values, n)
          : storage::vocab_rarity(shard, train_tokens, cfg.train.seq_len, f.threads);
  storage::write_metric_index(f.out, f.metric, shard, train_tokens, cfg.train.seq_len, values);
  auto sorted = values;
  std::sort(sorted.begin(), sorted.end());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << fmt::format(
                   "data analyze: {} samples of {} tokens from {}, {}: min {:.4g} median {:.4g} "
                   "max {:.4g} -> {}/{}.values, .order ({:.2f} s)",
                   n, cfg.train.seq_len + 1, shard_path.filename().string(), f.metric,
                   sorted.front(), sorted[sorted.size() / 2], sorted.back(), f.out, f.metric, s)
            << std::endl;
}

}  // namespace

void add_data_subcommand(CLI::App& app) {
  auto* data = app.add_subcommand("data", "data efficiency: per-sample difficulty indexes");
  g_analyze = data->add_subcommand(
      "analyze", "write the metric of every training sample and the samples sorted by it");
  auto& f = g_flags;
  g_analyze->add_option("--metric", f.metric, "vocab_rarity or custom")->required();
  g_analyze->add_option("--corpus", f.corpus,
                        "the corpus (as data.corpus: moby-dick, a .txt or a .tok); default: the "
                        "config's data.corpus or data.sources blend");
  g_analyze->add_option("--values", f.values, "custom: one number per sample, one per line")
      ->check(CLI::ExistingFile);
  g_analyze->add_option("--out", f.out, "folder for <metric>.values and <metric>.order")
      ->required();
  g_analyze->add_option("--config", f.config_file, "TOML config (data.corpus, train.seq_len)")
      ->check(CLI::ExistingFile);
  g_analyze->add_option("--set", f.sets, "override one key");
  g_analyze->add_option("--threads", f.threads, "threads for the pass (0: every core)");
  data->require_subcommand(1);
}

bool run_data_subcommand() {
  if (!g_analyze || !*g_analyze) return false;
  analyze(g_flags);
  return true;
}

}  // namespace zf
