// `zeroflow score` against the float64 twin's golden logits, perplexity against the scored
// tokens, and `train --init-hf` (fine-tuning a Hugging Face folder) through export and back.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "helpers.hpp"
#include "storage/safetensors.hpp"

namespace fs = std::filesystem;
using namespace zf::testing;

namespace {

const std::string k_hf = ZF_SOURCE_DIR "/tests/golden/hf/";

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') v.push_back(nlohmann::json::parse(line));
  return v;
}

}  // namespace

TEST_CASE("cli: score gives the float64 twin's log-probs for GPT-2 and Llama folders") {
  temp_dir d("score");
  auto g = zf::storage::safetensors_file::open(k_hf + "golden.safetensors");
  for (std::string m : {"gpt2", "llama"}) {
    CAPTURE(m);
    std::ofstream in(d.path / (m + ".jsonl"));
    for (int p = 0; p < 3; ++p)
      in << nlohmann::json{{"text", g.metadata().at(m + ".p" + std::to_string(p) + ".text")}}.dump()
         << "\n";
    in.close();
    auto r = zeroflow("score --hf " + k_hf + "tiny-" + m + " --input " +
                          (d.path / (m + ".jsonl")).string() + " --batch 2",
                      d.path);
    INFO(r.out);
    REQUIRE(r.code == 0);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 3);
    double worst = 0;
    for (int p = 0; p < 3; ++p) {
      const std::string key = m + ".p" + std::to_string(p);
      const auto ids = g.to_i32(key + ".ids");
      const auto logits = g.to_f32(key + ".logits");  // [T, V]
      const std::size_t T = ids.size(), V = logits.size() / T;
      const auto& got = lines[p]["token_logprobs"];
      REQUIRE(got.size() == T - 1);  // every token after the first (the twin's ids)
      double sum = 0;
      for (std::size_t t = 0; t + 1 < T; ++t) {
        CHECK(lines[p]["tokens"][t] == ids[t + 1]);
        double mx = -1e300, z = 0;
        for (std::size_t v = 0; v < V; ++v) mx = std::max(mx, double(logits[t * V + v]));
        for (std::size_t v = 0; v < V; ++v) z += std::exp(double(logits[t * V + v]) - mx);
        const double want = double(logits[t * V + ids[t + 1]]) - mx - std::log(z);
        worst = std::max(worst, std::abs(got[t].get<double>() - want));
        sum += got[t].get<double>();
      }
      CHECK(lines[p]["sum_logprob"].get<double>() == doctest::Approx(sum).epsilon(1e-9));
    }
    MESSAGE(m << ": max |score - twin log_softmax| " << worst);
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("cli: score --ppl is exp of the mean negative log-prob the scorer gives") {
  temp_dir d("ppl");
  const std::string text =
      "It is a way I have of driving off the spleen, and regulating the "
      "circulation. Whenever I find myself growing grim about the mouth.";
  std::ofstream(d.path / "t.txt") << text;
  std::ofstream(d.path / "t.jsonl") << nlohmann::json{{"text", text}}.dump() << "\n";
  const std::string model = " --hf " + k_hf + "tiny-gpt2";
  auto s = zeroflow("score" + model + " --input " + (d.path / "t.jsonl").string(), d.path);
  auto p = zeroflow("score" + model + " --ppl --input " + (d.path / "t.txt").string(), d.path);
  INFO(s.out << p.out);
  REQUIRE(s.code == 0);
  REQUIRE(p.code == 0);
  const auto sl = json_lines(s.out), pl = json_lines(p.out);
  REQUIRE(sl.size() == 1);
  REQUIRE(pl.size() == 1);
  const double n = double(sl[0]["token_logprobs"].size());
  CHECK(pl[0]["tokens"].get<double>() == n);
  CHECK(pl[0]["ppl"].get<double>() ==
        doctest::Approx(std::exp(-sl[0]["sum_logprob"].get<double>() / n)).epsilon(1e-5));
  // Overlapping windows: every token still scored once, with less context: another number.
  auto w = zeroflow(
      "score" + model + " --ppl --window 8 --stride 4 --input " + (d.path / "t.txt").string(),
      d.path);
  REQUIRE(w.code == 0);
  const auto wl = json_lines(w.out);
  CHECK(wl[0]["tokens"].get<double>() == n);
  CHECK(wl[0]["ppl"].get<double>() != doctest::Approx(pl[0]["ppl"].get<double>()));
  // bad input names the line
  std::ofstream(d.path / "bad.jsonl") << "{\"text\": \"ok text\"}\n{\"prompt\": 3}\n";
  auto b = zeroflow("score" + model + " --input " + (d.path / "bad.jsonl").string(), d.path);
  CHECK(b.code != 0);
  CHECK(contains(b.out, "bad.jsonl:2"));
}

TEST_CASE("cli: score --quantize scores the model quantized in memory, refusing bad options") {
  temp_dir d("pplq");
  std::string text;
  for (int i = 0; i < 6; ++i)
    text +=
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no "
        "money in my purse, and nothing particular to interest me on shore. ";
  std::ofstream(d.path / "t.txt") << text;
  const std::string model =
      " --hf " + k_hf + "tiny-gpt2 --ppl --input " + (d.path / "t.txt").string();
  auto run = [&](const std::string& extra) {
    auto r = zeroflow("score" + model + extra, d.path);
    INFO(r.out);
    REQUIRE(r.code == 0);
    return json_lines(r.out).at(0);
  };
  const auto fp32 = run("");
  const double base = fp32["ppl"].get<double>();
  const auto f8 = run(" --quantize fp8");
  CHECK(f8["scheme"] == "fp8");
  CHECK(f8["method"] == "rtn");
  CHECK(f8["tokens"] == fp32["tokens"]);
  CHECK(f8["ppl"].get<double>() != base);  // quantized: another number, near fp32's
  CHECK(std::abs(f8["ppl"].get<double>() / base - 1) < 0.05);
  const auto g =
      run(" --quantize w4a16 --group-size 32 --method gptq --lorc-rank 4 --calibration " +
          (d.path / "t.txt").string() + " --calibration-windows 4");
  CHECK(g["method"] == "gptq+lorc4");
  CHECK(g["quant_bytes"].get<double>() < f8["quant_bytes"].get<double>());
  auto bad = [&](const std::string& extra, const char* want) {
    auto r = zeroflow("score" + model + extra, d.path);
    CHECK(r.code != 0);
    CHECK(contains(r.out, want));
  };
  bad(" --quantize int3", "--quantize: unknown scheme 'int3'");
  bad(" --quantize w4a16 --group-size 48", "--group-size 48");
  // GPTQ with no calibration text calibrates on text the model samples itself
  const auto s = run(" --quantize w4a16 --group-size 32 --method gptq --calibration-windows 2");
  CHECK(s["method"] == "gptq");
  bad(" --quantize w4a16 --method awq", "--method: unknown method 'awq'");
  std::ofstream(d.path / "empty.txt") << "";
  bad(" --quantize w4a16 --method gptq --calibration " + (d.path / "empty.txt").string(),
      "calibration needs at least");
}

TEST_CASE("cli: train --init-hf fine-tunes a Llama folder, its export serves and scores alike") {
  temp_dir d("initfh");
  std::string corpus;
  {
    std::ifstream md(std::string(ZF_DATA_DIR) + "/moby-dick.txt");
    corpus.resize(60000);
    md.read(corpus.data(), long(corpus.size()));
  }
  std::ofstream(d.path / "corpus.txt") << corpus;
  auto run = d.path / "run";
  auto r = zeroflow("train --init-hf " + k_hf + "tiny-llama --out " + run.string() +
                        " --set data.corpus=" + (d.path / "corpus.txt").string() +
                        " --set train.steps=24 --set train.seq_len=32 --set train.batch_size=4"
                        " --set optimizer.lr=3e-3 --set schedule.warmup=2 --set eval.every=12"
                        " --set train.threads=1 --set train.sample_tokens=8 --quiet",
                    d.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  // validation loss falls as the Hugging Face weights fine-tune on the corpus
  std::vector<double> val;
  for (const auto& j : json_lines(slurp(run / "metrics.jsonl")))
    if (j.contains("val_loss")) val.push_back(j["val_loss"].get<double>());
  REQUIRE(val.size() >= 2);
  CHECK(val.back() < val.front());
  const std::string toml = slurp(run / "config.toml");
  CHECK(contains(toml, "arch = 'llama'"));
  CHECK(contains(toml, "n_kv_head = 2"));

  auto e = zeroflow("ckpt export " + run.string() + " --format safetensors --out " +
                        (d.path / "hf" / "model.safetensors").string(),
                    d.path);
  INFO(e.out);
  REQUIRE(e.code == 0);
  fs::copy_file(k_hf + "tiny-llama/tokenizer.json", d.path / "hf" / "tokenizer.json");
  std::ofstream(d.path / "s.jsonl") << "{\"text\": \"Call me Ishmael. Some years ago\"}\n";
  const std::string input = " --input " + (d.path / "s.jsonl").string();
  auto a = zeroflow("score --hf " + (d.path / "hf").string() + input, d.path);
  auto b = zeroflow("score --checkpoint " + run.string() + input, d.path);
  INFO(a.out << b.out);
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  CHECK(a.out == b.out);  // same weights, same tokenizer, same forward: the same bits
  auto g = zeroflow("generate --hf " + (d.path / "hf").string() +
                        " --prompt 'Call me' --max-tokens 8 --temperature 0",
                    d.path);
  CHECK(g.code == 0);
  CHECK(g.out.rfind("Call me", 0) == 0);
}
