// The zeroflow command line as a user meets it: help, config, tokenize, train, generate, and
// bad input that must give one clear message, a non-zero exit and leave the disk as it was.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>

#include "integration/helpers.hpp"
#include "storage/checkpoint.hpp"
#include "storage/token_shard.hpp"

using zf::testing::slurp;
using zf::testing::temp_dir;
using zf::testing::zeroflow;
namespace fs = std::filesystem;

namespace {
// CLI flags for a model that trains in about a second.
const std::string k_small =
    " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32 --set model.n_positions=32"
    " --set train.seq_len=32 --set train.batch_size=4 --set eval.every=5"
    " --set eval.batches=2 --set checkpoint.every=5 --set train.sample_tokens=8"
    " --set train.threads=1 --set data.data_dir=" ZF_DATA_DIR;

// Everything under dir, file by file, as (path, bytes) so a test can say "nothing changed".
std::map<std::string, std::string> snapshot_tree(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[e.path().string()] = slurp(e.path());
  return m;
}
}  // namespace

TEST_CASE("cli: --help lists the subcommands") {
  temp_dir d("help");
  auto r = zeroflow("--help", d.path);
  CHECK(r.code == 0);
  for (const char* s : {"train", "generate", "tokenize", "config"})
    CHECK(r.out.find(s) != std::string::npos);
  auto t = zeroflow("train --help", d.path);
  CHECK(t.code == 0);
  CHECK(t.out.find("--resume") != std::string::npos);
}

TEST_CASE("cli: config prints TOML with every documented key") {
  temp_dir d("config");
  auto r = zeroflow("config --set train.steps=77", d.path);
  REQUIRE(r.code == 0);
  for (const char* k : {"[train]", "steps = 77",   "batch_size", "seq_len", "[optimizer]", "lr",
                        "seed",    "[checkpoint]", "every",      "[eval]",  "[schedule]",  "warmup",
                        "[zero]",  "stage",        "[model]",    "n_layer", "n_head",      "n_embd",
                        "[data]",  "corpus",       "[engine]",   "[server]"})
    CHECK_MESSAGE(r.out.find(k) != std::string::npos, k);
  // and it is accepted back as a config file
  std::ofstream(d.path / "c.toml") << r.out;
  auto again = zeroflow("config --config " + (d.path / "c.toml").string(), d.path);
  CHECK(again.code == 0);
  CHECK(again.out == r.out);
}

TEST_CASE("cli: tokenize --ids prints GPT-2 ids") {
  temp_dir d("tok");
  auto r =
      zeroflow("tokenize --tokenizer gpt2 --ids --data-dir " ZF_DATA_DIR " < /dev/null", d.path);
  CHECK(r.code == 0);
  std::ofstream(d.path / "in.txt") << "Hello world<|endoftext|>";
  r = zeroflow("tokenize --tokenizer gpt2 --ids --data-dir " ZF_DATA_DIR " < " +
                   (d.path / "in.txt").string(),
               d.path);
  CHECK(r.code == 0);
  CHECK(r.out == "15496 995 50256\n");
  r = zeroflow("tokenize --tokenizer gpt2 --data-dir " ZF_DATA_DIR " --input " +
                   (d.path / "in.txt").string() + " --output " + (d.path / "in.tok").string(),
               d.path);
  CHECK(r.code == 0);
  auto s = zf::storage::token_shard::open(d.path / "in.tok");
  REQUIRE(s.size() == 3);
  CHECK(s[0] == 15496);
  CHECK(s[2] == 50256);
}

TEST_CASE("cli: train, then generate from its checkpoint") {
  temp_dir d("traingen");
  auto out = d.path / "run";
  auto r = zeroflow("train --set train.steps=10" + k_small + " --out " + out.string(), d.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("step 10/10") != std::string::npos);
  CHECK(r.out.find("--- sample") != std::string::npos);
  CHECK(fs::exists(out / "checkpoints" / "step-000010" / "manifest"));
  auto g = zeroflow("generate --checkpoint " + out.string() +
                        " --prompt 'The whale' --max-tokens 12 --seed 3 --data-dir " ZF_DATA_DIR,
                    d.path);
  INFO(g.out);
  REQUIRE(g.code == 0);
  CHECK(g.out.rfind("The whale", 0) == 0);
  CHECK(g.out.size() > std::string("The whale\n").size());
  // same seed, same text
  auto g2 = zeroflow("generate --checkpoint " + out.string() +
                         " --prompt 'The whale' --max-tokens 12 --seed 3 --data-dir " ZF_DATA_DIR,
                     d.path);
  CHECK(g2.out == g.out);
}

TEST_CASE("cli: bad input gives one clear message and a non-zero exit") {
  temp_dir d("bad");
  struct bad {
    std::string args, expect;
  };
  std::ofstream(d.path / "unknown.toml") << "[train]\nfoo = 1\n";
  std::ofstream(d.path / "neg.toml") << "[train]\nlr = -1\n";
  const std::string out = " --out " + (d.path / "never").string();
  for (const bad& b : {
           bad{"train --set data.corpus=/nonexistent/corpus.txt" + k_small + out,
               "/nonexistent/corpus.txt"},
           bad{"train --set train.foo=1" + out, "unknown config key 'train.foo'"},
           bad{"train --config " + (d.path / "unknown.toml").string() + out,
               "unknown config key 'train.foo'"},
           bad{"train --set optimizer.lr=-1" + out, "optimizer.lr: expected"},
           bad{"train --config " + (d.path / "neg.toml").string() + out, "got -1"},
           bad{"train --set train.zero=x" + out, "unknown config key 'train.zero'"},
           bad{"train --set model.n_head=3" + out, "model.n_head"},
           bad{"generate --checkpoint " + (d.path / "nothing").string() + " --prompt x",
               "no checkpoint at"},
       }) {
    auto r = zeroflow(b.args, d.path);
    INFO(b.args << "\n" << r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(b.expect) != std::string::npos);
    CHECK(r.out.find("error") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(d.path / "never"));  // no run folder was created for bad input
}

TEST_CASE("cli: NaN sampling flags and a folder as input are refused (issue 9)") {
  temp_dir d("bad_flags");
  for (const auto& [args, expect] : std::vector<std::pair<std::string, std::string>>{
           {"generate --hf /nowhere --prompt x --temperature nan",
            "--temperature: expected a number in [0, 100], got nan"},
           {"generate --hf /nowhere --prompt x --top-p nan",
            "--top-p: expected a number in [0, 1], got nan"},
           {"serve --hf /nowhere --threads -5", "engine.threads: expected 0..1024, got -5"},
           {"tokenize --input " + d.path.string() + " --output " + (d.path / "x.tok").string(),
            "is a folder, not a regular file"},
       }) {
    auto r = zeroflow(args, d.path);
    INFO(args << "\n" << r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(expect) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(d.path / "x.tok"));  // no empty shard written
}

// Issue 9: sizes the machine cannot hold ended in std::bad_alloc (or an out-of-memory kill)
// after the run folder was started.
TEST_CASE("cli: a model too large for memory is refused before --out, naming its keys") {
  temp_dir d("too_big");
  const fs::path out = d.path / "never";
  for (const auto& [args, expect] : std::vector<std::pair<std::string, std::string>>{
           {"train --set model.n_embd=65536", "model.n_layer = 4, model.n_embd = 65536:"},
           {"train --set model.vocab_size=4194304 --set model.n_embd=8192",
            "model.vocab_size = 4194304, model.n_embd = 8192:"},
       }) {
    auto r = zeroflow(args + " --out " + out.string(), d.path);
    INFO(args << "\n" << r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(expect) != std::string::npos);
    CHECK(r.out.find("iB of memory (parameters") != std::string::npos);
    CHECK(r.out.find("but this machine has") != std::string::npos);
    CHECK(r.out.find("bad_alloc") == std::string::npos);
  }
  CHECK_FALSE(fs::exists(out));  // nothing written to --out
}

// Issue 9: a binary file as a training corpus trained without a word.
TEST_CASE("cli: a binary corpus is refused by name and share, a few bad bytes warn") {
  temp_dir d("binary_corpus");
  const fs::path out = d.path / "never";
  std::string binary(16384, '\0');
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = char((i * 2654435761u) >> 11);
  std::ofstream(d.path / "blob.txt", std::ios::binary) << binary;
  const std::string blob = (d.path / "blob.txt").string();
  auto r =
      zeroflow("train" + k_small + " --set data.corpus=" + blob + " --out " + out.string(), d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("corpus " + blob + ": ") != std::string::npos);
  CHECK(r.out.find("% of its bytes are not valid UTF-8") != std::string::npos);
  CHECK(r.out.find("data.max_invalid_utf8 = 1") != std::string::npos);
  CHECK_FALSE(fs::exists(out));  // nothing written to --out

  // tokenize: refused by name and share, nothing written; --force tokenizes with the warning
  const std::string tok = (d.path / "blob.tok").string();
  r = zeroflow("tokenize --data-dir " ZF_DATA_DIR " --input " + blob + " --output " + tok, d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("corpus " + blob + ": ") != std::string::npos);
  CHECK(r.out.find("--force") != std::string::npos);
  CHECK_FALSE(fs::exists(tok));
  r = zeroflow("tokenize --force --data-dir " ZF_DATA_DIR " --input " + blob + " --output " + tok,
               d.path);
  CHECK(r.code == 0);
  CHECK(r.out.find("warning: corpus " + blob) != std::string::npos);
  CHECK(fs::exists(tok));

  // A few bad bytes: a warning, and the run trains.
  std::string text = slurp(ZF_DATA_DIR "/moby-dick.txt").substr(0, 20000);
  text[500] = '\xFF';
  text[900] = '\0';
  std::ofstream(d.path / "few.txt", std::ios::binary) << text;
  const std::string few = (d.path / "few.txt").string();
  fs::create_directories(d.path / "data");  // the corpus cache goes here, not in the shared one
  fs::create_directory_symlink(fs::absolute(ZF_DATA_DIR "/gpt2"), d.path / "data" / "gpt2");
  r = zeroflow("train --set train.steps=2" + k_small +
                   " --set data.data_dir=" + (d.path / "data").string() +
                   " --set data.corpus=" + few + " --out " + (d.path / "run").string(),
               d.path);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out.find("warning: corpus " + few + ": 0.01% of its bytes are not valid UTF-8") !=
        std::string::npos);
  r = zeroflow("tokenize --data-dir " ZF_DATA_DIR " --input " + few + " --output " +
                   (d.path / "few.tok").string(),
               d.path);
  CHECK(r.code == 0);
  CHECK(r.out.find("warning: corpus " + few) != std::string::npos);
}

TEST_CASE("cli: a truncated token shard is refused by name") {
  temp_dir d("trunc");
  std::ofstream(d.path / "in.txt") << slurp(ZF_DATA_DIR "/moby-dick.txt").substr(0, 20000);
  auto tok = d.path / "c.tok";
  REQUIRE(zeroflow("tokenize --data-dir " ZF_DATA_DIR " --input " + (d.path / "in.txt").string() +
                       " --output " + tok.string(),
                   d.path)
              .code == 0);
  fs::resize_file(tok, fs::file_size(tok) - 7);
  auto r = zeroflow(
      "train --set data.corpus=" + tok.string() + k_small + " --out " + (d.path / "run").string(),
      d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find(tok.string()) != std::string::npos);
  CHECK(r.out.find("truncated") != std::string::npos);
}

TEST_CASE("cli: a corrupt checkpoint is refused and nothing on disk changes") {
  temp_dir d("corrupt");
  auto out = d.path / "run";
  REQUIRE(zeroflow("train --set train.steps=10 --set checkpoint.keep=5" + k_small + " --out " +
                       out.string(),
                   d.path)
              .code == 0);
  auto model = out / "checkpoints" / "step-000010" / "rank-00000.bin";
  {  // one byte in the optimizer state (the middle) and one in the parameters (the first page):
     // resuming reads both, generating only the parameters
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(model) / 2));
    f.put('\x7f');
    f.seekp(100);
    f.put('\x7f');
  }
  auto before = snapshot_tree(out);
  auto r = zeroflow(
      "train --set train.steps=20" + k_small + " --out " + out.string() + " --resume latest",
      d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("rank-00000.bin is corrupt") != std::string::npos);
  auto g = zeroflow("generate --checkpoint " + out.string() + " --prompt x --data-dir " ZF_DATA_DIR,
                    d.path);
  CHECK(g.code != 0);
  CHECK(g.out.find("corrupt") != std::string::npos);
  CHECK(snapshot_tree(out) == before);  // metrics, config, checkpoints: all as they were
  // the earlier checkpoint is intact and resumable
  auto r2 = zeroflow("train --set train.steps=20" + k_small + " --out " + out.string() +
                         " --resume " + (out / "checkpoints" / "step-000005").string(),
                     d.path);
  INFO(r2.out);
  CHECK(r2.code != 0);  // step-000010 exists and would be overwritten: refused up front
  CHECK(r2.out.find("newer checkpoint (step 10)") != std::string::npos);
  CHECK(snapshot_tree(out) == before);
  // into a new folder, the older checkpoint resumes
  auto r3 =
      zeroflow("train --set train.steps=12" + k_small + " --out " + (d.path / "branch").string() +
                   " --resume " + (out / "checkpoints" / "step-000005").string(),
               d.path);
  INFO(r3.out);
  CHECK(r3.code == 0);
  CHECK(zf::storage::read_manifest(d.path / "branch").step == 12);
}

TEST_CASE("cli: Ctrl-C stops cleanly with a checkpoint that resumes") {
  temp_dir d("sigint");
  auto out = d.path / "run";
  // timeout sends SIGINT after 4 s; the run would take far longer. --foreground: without it,
  // timeout signals the child and then its whole process group, a second Ctrl-C that aborts
  // (exit 130) when the child handled the first before the second arrived (seen on CI).
  std::string cmd = "timeout --foreground --preserve-status -s INT 4 " +
                    std::string(ZF_BINARY_DIR) + "/zeroflow train --set train.steps=100000" +
                    k_small + " --out " + out.string() + " > " + (d.path / "log").string() +
                    " 2>&1";
  int rc = std::system(cmd.c_str());
  std::string log = slurp(d.path / "log");
  INFO(log);
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
  CHECK(log.find("stopped at step") != std::string::npos);
  auto head = zf::storage::read_manifest(out);
  CHECK(head.step > 0);
  auto r = zeroflow("train --set train.steps=" + std::to_string(head.step + 3) + k_small +
                        " --out " + out.string() + " --resume latest",
                    d.path);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(zf::storage::read_manifest(out).step == head.step + 3);
}

// What a launcher that restarts a failed job runs: the job's own command plus --resume auto.
TEST_CASE("cli: --resume auto starts fresh, then continues the last checkpoint exactly") {
  temp_dir d("resume_auto");
  const std::string train = "train --set train.steps=20" + k_small;
  const fs::path out = d.path / "job";
  auto losses = [](const fs::path& metrics) {
    std::vector<std::string> v;  // as printed: equal text is equal bits
    std::istringstream in(slurp(metrics));
    for (std::string line; std::getline(in, line);) {
      const auto at = line.find("\"loss\":");
      if (at != std::string::npos) v.push_back(line.substr(at, line.find(',', at) - at));
    }
    return v;
  };
  auto full = zeroflow(train + " --out " + (d.path / "full").string(), d.path);
  INFO(full.out);
  REQUIRE(full.code == 0);
  // No checkpoint in --out yet: a fresh start there.
  auto first =
      zeroflow(train + " --out " + out.string() + " --resume auto --stop-after 10", d.path);
  INFO(first.out);
  REQUIRE(first.code == 0);
  CHECK(first.out.find("20 steps from step 0") != std::string::npos);
  CHECK(zf::storage::read_manifest(out).step == 10);
  // A checkpoint: continued from it, not refused as "already holds a run".
  auto second = zeroflow(train + " --out " + out.string() + " --resume auto", d.path);
  INFO(second.out);
  REQUIRE(second.code == 0);
  CHECK(second.out.find("20 steps from step 10") != std::string::npos);
  CHECK(zf::storage::read_manifest(out).step == 20);
  const auto want = losses(d.path / "full" / "metrics.jsonl");
  CHECK(want.size() == 20);
  CHECK(losses(out / "metrics.jsonl") == want);  // steps 1-10, then 11-20, bit for bit
  // A finished job restarted (its ranks failed after the final checkpoint) is done, not failed;
  // --resume latest still calls it an error, and nothing on disk changes either way.
  const std::string metrics_before = slurp(out / "metrics.jsonl");
  auto done = zeroflow(train + " --out " + out.string() + " --resume auto", d.path);
  CHECK(done.code == 0);
  CHECK(done.out.find("already finished at step 20 (--resume auto): nothing left to train") !=
        std::string::npos);
  auto latest = zeroflow(train + " --out " + out.string() + " --resume latest", d.path);
  CHECK(latest.code != 0);
  CHECK(latest.out.find("the checkpoint is at step 20, train.steps is 20: nothing to do") !=
        std::string::npos);
  CHECK(slurp(out / "metrics.jsonl") == metrics_before);
  // auto needs the job's folder.
  auto bare = zeroflow(train + " --resume auto", d.path);
  INFO(bare.out);
  CHECK(bare.code != 0);
  CHECK(bare.out.find("error: --resume auto: give the run folder with --out DIR") !=
        std::string::npos);
}

TEST_CASE(
    "cli: train --console serves the run's console, and a taken port does not stop training") {
  temp_dir d("train_console");
  auto r = zeroflow("train --set train.steps=5" + k_small + " --console --console-port 0 --out " +
                        (d.path / "runs" / "a").string(),
                    d.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("console on http://127.0.0.1:") != std::string::npos);
  CHECK(r.out.find("/#run=a") != std::string::npos);
  // A port already taken: said, and the run goes on.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  const int taken = ntohs(a.sin_port);
  auto r2 = zeroflow("train --set train.steps=5" + k_small + " --console --console-port " +
                         std::to_string(taken) + " --out " + (d.path / "runs" / "b").string(),
                     d.path);
  INFO(r2.out);
  CHECK(r2.code == 0);
  CHECK(r2.out.find("training goes on without the console") != std::string::npos);
  CHECK(r2.out.find("step 5/5") != std::string::npos);
  ::close(fd);
}

TEST_CASE("cli: tune gemm measures the model's shapes, saves the table and refuses bad input") {
  temp_dir d("tune");
  const auto table = d.path / "t" / "gemm_table.txt";
  auto r = zeroflow("tune gemm --precision bf16 --threads 1 --table " + table.string() + k_small,
                    d.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("| bf16 | head fwd |") != std::string::npos);
  CHECK(r.out.find("bf16 GEMMs run on onednn") != std::string::npos);
  const std::string text = slurp(table);
  CHECK(text.rfind("zeroflow gemm table v1\ncpu ", 0) == 0);
  CHECK(text.find(" bf16 NT ") != std::string::npos);  // the head's forward
  CHECK(text.find(":ok") != std::string::npos);
  auto bad = zeroflow("tune gemm --precision fp8 --table " + table.string(), d.path);
  CHECK(bad.code != 0);
  CHECK(bad.out.find("--precision: expected f32, bf16 or f16") != std::string::npos);
  // a bad ZF_GEMM_TUNING is refused by name (the helper runs zeroflow first: --help, silenced)
  auto bad_env = zeroflow(
      "--help > /dev/null; ZF_GEMM_TUNING=sometimes " ZF_BINARY_DIR "/zeroflow config", d.path);
  CHECK(bad_env.code != 0);
  CHECK(bad_env.out.find("ZF_GEMM_TUNING: expected off, cached or lazy") != std::string::npos);
}
