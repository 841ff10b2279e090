// MoE training through the command line: 2 Gloo processes with expert parallelism 2 (tokens to
// their experts and back by all_to_all between the processes) follow the one-process losses at
// ZeRO stages 0 and 3; the MoE figures reach metrics.jsonl; bad MoE settings are refused naming
// the key; an MoE checkpoint generates and is refused by export and quantize with a reason.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "helpers.hpp"

namespace {

const std::string k_moe =
    " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32"
    " --set model.n_positions=32 --set train.seq_len=32 --set train.steps=20"
    " --set schedule.warmup=4 --set optimizer.lr=3e-3 --set eval.every=10"
    " --set eval.batches=2 --set checkpoint.every=10 --set train.sample_tokens=0"
    " --set train.threads=1 --set model.moe.num_experts=4 --set model.moe.top_k=2"
    " --set model.moe.capacity_factor=1.0 --set model.moe.min_capacity=1"
    " --set model.moe.expert_intermediate=64 --set data.data_dir=" ZF_DATA_DIR;

std::vector<double> values(const std::filesystem::path& metrics, const std::string& key) {
  std::vector<double> v;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto p = line.find("\"" + key + "\":");
    if (p != std::string::npos) v.push_back(std::stod(line.substr(p + key.size() + 3)));
  }
  return v;
}

}  // namespace

TEST_CASE("moe train: 2 Gloo processes with expert parallelism follow the one-process losses") {
  zf::testing::temp_dir d("moe-gloo");
  auto one = zf::testing::zeroflow(
      "train --set train.batch_size=4" + k_moe + " --out " + (d.path / "one").string(), d.path);
  INFO(one.out);
  REQUIRE(one.code == 0);
  const auto ref = values(d.path / "one" / "metrics.jsonl", "loss");
  REQUIRE(ref.size() == 20);
  const auto dropped = values(d.path / "one" / "metrics.jsonl", "moe_dropped");
  REQUIRE(dropped.size() == 20);
  CHECK(dropped[0] > 0);  // capacity binds: the processes must route as one
  for (int stage : {0, 3}) {
    CAPTURE(stage);
    auto out = d.path / ("two" + std::to_string(stage));
    auto two = zf::testing::zeroflow(
        "launch --nproc 2 -- train --set train.batch_size=2 --set train.expert_parallel=2" + k_moe +
            " --set zero.stage=" + std::to_string(stage) + " --out " + out.string(),
        d.path);
    INFO(two.out);
    REQUIRE(two.code == 0);
    const auto got = values(out / "metrics.jsonl", "loss");
    REQUIRE(got.size() == 20);
    for (int s = 0; s < 20; ++s) {
      CAPTURE(s);
      CHECK(std::abs(got[s] - ref[s]) <= 1e-5 * ref[s]);
    }
  }
  // The checkpoint serves: generate runs on it; export and quantize say why they do not.
  const std::string ck = (d.path / "one").string();
  auto gen = zf::testing::zeroflow(
      "generate --checkpoint " + ck + " --prompt Call --max-tokens 4 --data-dir " ZF_DATA_DIR,
      d.path);
  INFO(gen.out);
  CHECK(gen.code == 0);
  auto ex = zf::testing::zeroflow(
      "ckpt export " + ck + " --out " + (d.path / "x" / "model.safetensors").string(), d.path);
  CHECK(ex.code != 0);
  CHECK(ex.out.find("Mixture-of-Experts") != std::string::npos);
  auto q = zf::testing::zeroflow(
      "quantize --checkpoint " + ck + " --scheme w8a8 --out " + (d.path / "q").string(), d.path);
  CHECK(q.code != 0);
  CHECK(q.out.find("Mixture-of-Experts") != std::string::npos);
}

TEST_CASE("moe train: bad MoE settings are refused naming the key") {
  zf::testing::temp_dir d("moe-bad");
  const std::string base = "train --set train.steps=1 --set model.moe.num_experts=4";
  struct bad {
    std::string set, key;
  };
  for (const bad& b : {bad{"model.moe.top_k=5", "model.moe.top_k"},
                       bad{"model.moe.capacity_factor=0", "model.moe.capacity_factor"},
                       bad{"model.moe.capacity_factor=-1", "model.moe.capacity_factor"},
                       bad{"model.moe.eval_capacity_factor=0", "model.moe.eval_capacity_factor"},
                       bad{"train.expert_parallel=3", "train.expert_parallel"},
                       bad{"model.moe.layers=7", "model.moe.layers"},
                       bad{"model.moe.layer_experts=2", "model.moe.layer_experts"},
                       bad{"model.moe.jitter=1", "model.moe.jitter"},
                       bad{"model.moe.jitter=-0.1", "model.moe.jitter"},
                       bad{"model.moe.gate_scale=0", "model.moe.gate_scale"},
                       bad{"model.moe.bias_update_rate=-1", "model.moe.bias_update_rate"}}) {
    CAPTURE(b.set);
    auto r = zf::testing::zeroflow(base + " --set " + b.set + " --out " + (d.path / "o").string(),
                                   d.path);
    INFO(r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(b.key) != std::string::npos);
  }
  // ranks that the expert-parallel size does not divide: caught when the ranks start
  auto r =
      zf::testing::zeroflow(base + k_moe + " --set train.ranks=3 --set train.expert_parallel=2" +
                                " --out " + (d.path / "r").string(),
                            d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("train.expert_parallel") != std::string::npos);
}
