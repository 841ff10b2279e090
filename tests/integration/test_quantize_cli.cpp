// `zeroflow quantize`: a zeroflow checkpoint and a Hugging Face folder quantized into new
// checkpoints that score exactly as the same quantization in memory does, generate, show their
// formats in `ckpt info`, verify, and are refused by `train` by name; bad options and files are
// refused naming the option or file.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "helpers.hpp"

namespace fs = std::filesystem;
using namespace zf::testing;

namespace {

const std::string k_hf = ZF_SOURCE_DIR "/tests/golden/hf/";
const std::string k_small =
    " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32 --set model.n_positions=32"
    " --set train.seq_len=32 --set train.batch_size=4 --set eval.every=0"
    " --set checkpoint.every=0 --set train.sample_tokens=0 --set train.threads=1"
    " --set data.data_dir=" ZF_DATA_DIR;

nlohmann::json last_json(const std::string& out) {
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') last = line;
  return nlohmann::json::parse(last);
}

}  // namespace

TEST_CASE("cli: quantize a trained checkpoint, score and generate from it, train refuses it") {
  temp_dir d("quantize");
  const fs::path run = d.path / "run", q = d.path / "q8";
  auto r = zeroflow("train --set train.steps=4" + k_small + " --out " + run.string(), d.path);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  std::string text;
  {
    std::ifstream md(std::string(ZF_DATA_DIR) + "/moby-dick.txt");
    text.resize(6000);
    md.read(text.data(), long(text.size()));
  }
  std::ofstream(d.path / "t.txt") << text;
  // GPTQ calibrated on the run's own corpus (no --calibration)
  r = zeroflow("quantize --checkpoint " + run.string() +
                   " --scheme w8a8 --group-size 32 --method gptq --calibration-windows 4 --out " +
                   q.string(),
               d.path);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const auto info = last_json(r.out);
  CHECK(info["scheme"] == "w8a8");
  CHECK(info["method"] == "gptq");
  CHECK(fs::exists(q / "step-000004" / "quant-00000.bin"));

  const std::string ppl = " --ppl --input " + (d.path / "t.txt").string();
  auto s_float = zeroflow("score --checkpoint " + run.string() + ppl, d.path);
  auto s_q = zeroflow("score --checkpoint " + q.string() + ppl, d.path);
  REQUIRE(s_float.code == 0);
  REQUIRE_MESSAGE(s_q.code == 0, s_q.out);
  const auto jf = last_json(s_float.out), jq = last_json(s_q.out);
  CHECK(jq["scheme"] == "w8a8");
  CHECK(jq["tokens"] == jf["tokens"]);
  CHECK(jq["ppl"].get<double>() != jf["ppl"].get<double>());
  CHECK(std::abs(jq["ppl"].get<double>() / jf["ppl"].get<double>() - 1) < 0.02);

  auto g = zeroflow(
      "generate --checkpoint " + q.string() + " --prompt Call --max-tokens 6 --temperature 0",
      d.path);
  CHECK_MESSAGE(g.code == 0, g.out);

  auto ci = zeroflow("ckpt info " + q.string(), d.path);
  CHECK(contains(ci.out, "quantized: w8a8 by gptq"));
  CHECK(contains(ci.out, "INT8[32,96] g32 a8"));
  CHECK(zeroflow("ckpt verify " + q.string(), d.path).code == 0);

  auto t = zeroflow(
      "train --set train.steps=8" + k_small + " --resume " + q.string() + " --out " + q.string(),
      d.path);
  CHECK(t.code != 0);
  CHECK(contains(t.out, "is quantized (w8a8, gptq)"));

  // refused: quantizing it again, writing over a checkpoint, bad options, an empty calibration
  auto bad = [&](const std::string& args, const std::string& want) {
    auto b = zeroflow("quantize " + args, d.path);
    CHECK(b.code != 0);
    CHECK_MESSAGE(contains(b.out, want), b.out);
  };
  const std::string src = "--checkpoint " + run.string();
  bad("--checkpoint " + q.string() + " --scheme w4a16 --out " + (d.path / "x").string(),
      "already quantized (w8a8, gptq)");
  bad(src + " --scheme w4a16 --group-size 32 --out " + q.string(), "already holds checkpoints");
  bad(src + " --scheme int3 --out " + (d.path / "x").string(), "--scheme: unknown scheme 'int3'");
  bad(src + " --scheme w4a16 --group-size 48 --out " + (d.path / "x").string(), "--group-size 48");
  std::ofstream(d.path / "empty.txt") << "";
  bad(src + " --scheme w4a16 --group-size 32 --method gptq --calibration " +
          (d.path / "empty.txt").string() + " --out " + (d.path / "x").string(),
      "--calibration " + (d.path / "empty.txt").string() + ": 0 tokens");
  CHECK_FALSE(fs::exists(d.path / "x" / "latest"));
}

TEST_CASE("cli: quantize a Hugging Face folder: its checkpoint scores as in-memory quantization") {
  temp_dir d("quantizehf");
  std::string text;
  for (int i = 0; i < 4; ++i)
    text += "Call me Ishmael. Some years ago, never mind how long precisely, having little money. ";
  std::ofstream(d.path / "t.txt") << text;
  const std::string opts = " --group-size 32 --lorc-rank 2";
  const fs::path q = d.path / "q4";
  auto r = zeroflow(
      "quantize --hf " + k_hf + "tiny-llama --scheme w4a16" + opts + " --out " + q.string(),
      d.path);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(fs::exists(q / "tokenizer.json"));  // the tokenizer travels with the model
  const std::string ppl = " --ppl --input " + (d.path / "t.txt").string();
  auto mem =
      zeroflow("score --hf " + k_hf + "tiny-llama" + ppl + " --quantize w4a16" + opts, d.path);
  // data.tokenizer is "tokenizer.json", found beside the checkpoint (not in the working folder)
  auto disk = zeroflow("score --checkpoint " + q.string() + ppl, d.path);
  REQUIRE_MESSAGE(mem.code == 0, mem.out);
  REQUIRE_MESSAGE(disk.code == 0, disk.out);
  const auto jm = last_json(mem.out), jd = last_json(disk.out);
  CHECK(jd["method"] == "rtn+lorc2");
  CHECK(jd["ppl"].get<double>() == jm["ppl"].get<double>());  // the same model, bit for bit
  CHECK(jd["quant_bytes"] == jm["quant_bytes"]);
  auto g = zeroflow("generate --checkpoint " + q.string() + " --prompt Hi --max-tokens 4", d.path);
  CHECK_MESSAGE(g.code == 0, g.out);
}
