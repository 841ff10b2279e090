#include "pipelines/rl_run.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/rl_models.hpp"
#include "pipelines/rl_session.hpp"
#include "runtime/core/error.hpp"
#include "runtime/rl/reward_model.hpp"
#include "runtime/rl/sft.hpp"
#include "storage/fs_util.hpp"

namespace zf {
namespace fs = std::filesystem;

rl_run_result run_rl(run_config cfg, const rl_run_options& o) {
  // The run's roles, shared by the graph's RL stages; set up before the graph starts.
  auto session = std::make_shared<rl_session>(std::move(cfg), o);
  session->prepare();
  stage_defaults d;
  d.rl_run = [session](const run_config&) { return session; };
  const stage_registry reg = builtin_stages(d);
  const std::string text = o.graph.empty() ? default_rl_graph() : storage::read_text_file(o.graph);
  graph g = build_graph(text, o.graph.empty() ? "rlhf graph" : o.graph, run_config{}, reg);
  try {
    run_graph(g);
  } catch (const std::exception& e) {
    session->record_failure(e.what());  // run.json: failed, with the graph's error
    throw;
  }
  return session->finish();
}

sft_run_result run_sft(run_config cfg, const rl_run_options& o) {
  const rl_setup s = setup_rl(std::move(cfg), o.out, o.checkpoint);
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  auto pairs = sft_pairs(s);
  if (pairs.size() < 2) fail("sft: {} pairs; need at least 2 (one held out)", pairs.size());
  const std::size_t held = std::min<std::size_t>(256, pairs.size() / 10 + 1);
  std::vector<rl::sft_pair> heldout(pairs.end() - held, pairs.end());
  pairs.resize(pairs.size() - held);
  auto m = make_model(s, false, seed);
  std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
  rl::sft_options so{r.sft_steps, r.sft_batch, r.sft_lr, seed, s.cfg.optimizer};
  const auto losses = rl::sft_train(*m, pairs, so, [&](int step, float loss) {
    metrics << nlohmann::json{{"step", step + 1}, {"loss", loss}}.dump() << "\n";
    if (!o.quiet && (step + 1) % 100 == 0)
      std::cerr << fmt::format("sft step {:>5}/{} loss {:.4f}\n", step + 1, r.sft_steps, loss);
  });
  sft_run_result res{losses.front(), losses.back(), rl::sft_loss(*m, heldout, 64), ""};
  nlohmann::json summary{{"loss_first", res.loss_first},
                         {"loss_last", res.loss_last},
                         {"heldout_loss", res.heldout_loss},
                         {"pairs", pairs.size()},
                         {"heldout_pairs", held}};
  write_json_file(fs::path(o.out) / "summary.json", summary);
  res.checkpoint = save_model(s, o.out, *m, nullptr, r.sft_steps, summary);
  if (!o.quiet)
    std::cerr << fmt::format("sft: loss {:.3f} -> {:.3f}, held-out {:.3f}, checkpoint {}\n",
                             res.loss_first, res.loss_last, res.heldout_loss, res.checkpoint);
  return res;
}

reward_run_result run_reward(run_config cfg, const rl_run_options& o) {
  const rl_setup s = setup_rl(std::move(cfg), o.out, o.checkpoint);
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  auto pairs = preference_pairs(s, 16384);
  if (pairs.size() < 10) fail("reward: {} preference pairs; need at least 10", pairs.size());
  const std::size_t held = pairs.size() / 10;
  std::vector<rl::preference_ids> heldout(pairs.end() - held, pairs.end());
  pairs.resize(pairs.size() - held);
  auto m = make_model(s, true, seed);
  rl::rm_options ro{r.rm_steps, r.rm_batch, r.rm_lr, r.rm_center, seed, s.cfg.optimizer};
  const auto losses = rl::train_reward_model(*m, pairs, ro);
  {
    std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
    for (std::size_t i = 0; i < losses.size(); ++i)
      metrics << nlohmann::json{{"step", i + 1}, {"loss", losses[i]}}.dump() << "\n";
  }
  reward_run_result res{losses.front(), losses.back(), rl::pairwise_accuracy(*m, pairs, 64),
                        rl::pairwise_accuracy(*m, heldout, 64), ""};
  nlohmann::json summary{{"loss_first", res.loss_first},
                         {"loss_last", res.loss_last},
                         {"train_accuracy", res.train_accuracy},
                         {"heldout_accuracy", res.heldout_accuracy},
                         {"pairs", pairs.size()},
                         {"heldout_pairs", held}};
  write_json_file(fs::path(o.out) / "summary.json", summary);
  res.checkpoint = save_model(s, o.out, *m, nullptr, r.rm_steps, summary);
  if (!o.quiet)
    std::cerr << fmt::format(
        "reward model: loss {:.3f} -> {:.3f}, pairwise accuracy train {:.3f} held-out {:.3f}, "
        "checkpoint {}\n",
        res.loss_first, res.loss_last, res.train_accuracy, res.heldout_accuracy, res.checkpoint);
  return res;
}

}  // namespace zf
