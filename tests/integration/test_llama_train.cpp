// Llama through the whole training stack: `zeroflow train --set model.arch=llama` (GQA, untied
// head) on 2 thread ranks at ZeRO-3 and on 2 Gloo processes at ZeRO-3 gives the one-rank losses,
// and its checkpoint serves.
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

#include "integration/helpers.hpp"

using zf::testing::temp_dir;
using zf::testing::zeroflow;

namespace {

std::vector<double> losses(const std::filesystem::path& metrics) {
  std::vector<double> v;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) v.push_back(std::stod(line.substr(line.find("\"loss\":") + 7)));
  return v;
}

}  // namespace

TEST_CASE("llama train: ZeRO-3 on 2 threads and on 2 Gloo processes give the one-rank losses") {
  temp_dir d("llama-train");
  const std::string common =
      " --set model.arch=llama --set model.n_kv_head=2 --set model.n_head=4"
      " --set model.tied_head=false --set model.n_layer=2 --set model.n_embd=32"
      " --set model.n_positions=32 --set train.seq_len=32 --set train.steps=12"
      " --set schedule.warmup=2 --set optimizer.lr=3e-3 --set eval.every=0"
      " --set checkpoint.every=12 --set train.sample_tokens=0 --set train.threads=1"
      " --set data.data_dir=" ZF_DATA_DIR;
  auto one = zeroflow(
      "train --set train.batch_size=4" + common + " --out " + (d.path / "one").string(), d.path);
  INFO(one.out);
  REQUIRE(one.code == 0);
  const auto ref = losses(d.path / "one" / "metrics.jsonl");
  REQUIRE(ref.size() == 12);
  CHECK(ref.back() < ref.front());
  const std::string threads = "train --set train.ranks=2 --set zero.stage=3";
  const std::string procs = "launch --nproc 2 -- train --set zero.stage=3";
  for (const std::string& how : {threads, procs}) {
    CAPTURE(how);
    auto out = d.path / (how == threads ? "threads" : "procs");
    auto r =
        zeroflow(how + " --set train.batch_size=2" + common + " --out " + out.string(), d.path);
    INFO(r.out);
    REQUIRE(r.code == 0);
    const auto got = losses(out / "metrics.jsonl");
    REQUIRE(got.size() == 12);
    for (int s = 0; s < 12; ++s) {
      CAPTURE(s);
      CHECK(std::abs(got[s] - ref[s]) <= 1e-5 * ref[s]);
    }
  }
  auto g =
      zeroflow("generate --checkpoint " + (d.path / "procs").string() +
                   " --prompt 'The whale' --max-tokens 6 --temperature 0 --data-dir " ZF_DATA_DIR,
               d.path);
  INFO(g.out);
  CHECK(g.code == 0);
  CHECK(g.out.rfind("The whale", 0) == 0);
}
