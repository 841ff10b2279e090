// The serving engine in another process (actors/engine_remote): the same bits as the engine in
// this process, weights pushed over Gloo and swapped by version, and a killed engine process
// named with how it ended, within seconds, to requests in flight and to every later call.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "actors/engine.hpp"
#include "actors/engine_remote.hpp"
#include "engine_helpers.hpp"
#include "runtime/core/error.hpp"
#include "runtime/serve/backend_pool.hpp"
#include "runtime/text/byte_vocab.hpp"
#include "test_util.hpp"

using namespace zf;
using namespace zf::testing;

namespace {

model_config byte_model() {
  model_config m = test_config();
  m.vocab_size = 256;  // the byte vocabulary
  return m;
}

std::shared_ptr<const lm_weights> byte_weights(uint64_t seed) {
  return std::make_shared<const lm_weights>(
      lm_weights_of(byte_model(), test_params(seed, byte_model()).data(), "test-bytes"));
}

struct remote_fixture {
  temp_dir dir{"engine_remote"};
  std::filesystem::path tok_file = dir.path / "tokenizer.json";
  engine_config ec;
  remote_fixture() {
    std::ofstream(tok_file) << byte_level_tokenizer_json();
    ec.batch_invariant = true;
    ec.threads = 1;
  }
  tokenizer tok() const { return tokenizer::load_hf(tok_file); }
  actors::engine_process_options options(std::size_t bucket_bytes = 4096) const {
    actors::engine_process_options o;
    o.executable = std::string(ZF_BINARY_DIR) + "/zeroflow";
    o.tokenizer_file = tok_file;
    o.work_dir = dir.path;
    o.bucket_bytes = bucket_bytes;  // small: many buckets per version
    return o;
  }
};

// n sampled choices with log-probs, the same seed every time.
serve::completion_request sampled(std::vector<int> prompt) {
  serve::completion_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = 12;
  r.n = 4;
  r.ignore_eos = true;
  r.sampling.temperature = 1;
  r.sampling.seed = 42;
  r.sampling.logprobs = 2;
  return r;
}

collector::out generate(serve::completion_backend& eng, const serve::completion_request& r) {
  collector c;
  const auto s = eng.submit(r, c.sink());
  REQUIRE(s.status == 200);
  REQUIRE(c.wait({{s.id, r.n}}));
  return c.by_id[s.id];
}

void check_same(const collector::out& a, const collector::out& b) {
  REQUIRE(a.tokens.size() == b.tokens.size());
  for (auto& [i, t] : a.tokens) {
    CHECK(t == b.tokens.at(i));
    CHECK(a.text.at(i) == b.text.at(i));
    CHECK(a.versions.at(i) == b.versions.at(i));
    const auto &la = a.logprobs.at(i), &lb = b.logprobs.at(i);
    REQUIRE(la.size() == lb.size());
    for (std::size_t k = 0; k < la.size(); ++k) {
      CHECK(la[k].chosen.logprob == lb[k].chosen.logprob);  // bit for bit
      REQUIRE(la[k].top.size() == lb[k].top.size());
      for (std::size_t j = 0; j < la[k].top.size(); ++j)
        CHECK(la[k].top[j].token == lb[k].top[j].token);
    }
  }
}

// The engine-host child of this process.
pid_t engine_child() {
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream f(t.path() / "children");
    for (pid_t p; f >> p;) {
      std::ifstream cmd("/proc/" + std::to_string(p) + "/cmdline");
      std::string c((std::istreambuf_iterator<char>(cmd)), {});
      if (c.find("engine-host") != std::string::npos) return p;
    }
  }
  return -1;
}

}  // namespace

TEST_CASE("an engine in another process serves the same bits and swaps pushed versions") {
  remote_fixture f;
  auto local = actors::make_engine(byte_weights(5), f.tok(), f.ec);
  auto remote = actors::spawn_engine_process(byte_weights(5), f.tok(), f.ec, f.options());
  CHECK(remote->vocab_size() == 256);
  CHECK(remote->context_length() == byte_model().n_positions);
  const auto prompt = remote->encode("hello");
  CHECK(prompt == local->encode("hello"));
  check_same(generate(*remote, sampled(prompt)), generate(*local, sampled(prompt)));

  // Version 1, other weights, pushed in 4 KiB buckets: both engines serve it the same way.
  CHECK(remote->update_weights(1, byte_weights(6)) == 1);
  CHECK(local->update_weights(1, byte_weights(6)) == 1);
  CHECK(remote->weights_version() == 1);
  const auto a = generate(*remote, sampled(prompt));
  check_same(a, generate(*local, sampled(prompt)));
  CHECK(a.versions.at(0).front() == 1);
  // and again into the buffer the engine let go of (version 0's)
  CHECK(remote->update_weights(2, byte_weights(7)) == 2);
  CHECK(local->update_weights(2, byte_weights(7)) == 2);
  check_same(generate(*remote, sampled(prompt)), generate(*local, sampled(prompt)));

  // Refusals leave the served version as it was.
  CHECK_THROWS_WITH_AS(remote->update_weights(2, byte_weights(8)), doctest::Contains("version"),
                       error);
  CHECK_THROWS_WITH_AS(
      remote->update_weights(9, std::make_shared<const lm_weights>(test_weights())),
      doctest::Contains("another shape"), error);
  CHECK(remote->weights_version() == 2);
  auto bad = sampled(prompt);
  bad.max_tokens = 100000;  // past the context
  collector c;
  CHECK(remote->submit(bad, c.sink()).status == 400);
  CHECK(remote->metrics_text().find("zeroflow_") != std::string::npos);
}

TEST_CASE("a pool of engines, here and in another process, serves one engine's bits") {
  remote_fixture f;
  auto one = actors::make_engine(byte_weights(5), f.tok(), f.ec);
  std::vector<std::unique_ptr<serve::completion_backend>> engines;
  engines.push_back(actors::make_engine(byte_weights(5), f.tok(), f.ec));
  engines.push_back(actors::spawn_engine_process(byte_weights(5), f.tok(), f.ec, f.options()));
  serve::backend_pool pool(std::move(engines));
  const auto prompt = pool.encode("pool");
  // Requests alternate between the engines: each lands on one, with the same bits.
  for (int i = 0; i < 3; ++i)
    check_same(generate(pool, sampled(prompt)), generate(*one, sampled(prompt)));
  CHECK(pool.update_weights(1, byte_weights(6)) == 1);  // to both, at once
  CHECK(one->update_weights(1, byte_weights(6)) == 1);
  CHECK(pool.weights_version() == 1);
  for (int i = 0; i < 2; ++i) {
    const auto a = generate(pool, sampled(prompt));
    check_same(a, generate(*one, sampled(prompt)));
    CHECK(a.versions.at(0).front() == 1);
  }
  // A refusal by the engines is the pool's, and the version stays.
  CHECK_THROWS_AS(pool.update_weights(1, byte_weights(7)), error);
  CHECK(pool.weights_version() == 1);
}

TEST_CASE("a killed engine process is named, with how it ended, within seconds") {
  remote_fixture f;
  auto remote = actors::spawn_engine_process(byte_weights(5), f.tok(), f.ec, f.options());
  const pid_t pid = engine_child();
  REQUIRE(pid > 0);
  // A request long enough to be in flight when the process dies.
  auto r = sampled(remote->encode("x"));
  r.max_tokens = 200;
  r.n = 16;
  collector c;
  const auto s = remote->submit(r, c.sink());
  REQUIRE(s.status == 200);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGKILL);
  REQUIRE(c.wait({{s.id, r.n}}, std::chrono::seconds(10)));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  const std::string named = "rollout engine (process " + std::to_string(pid) + ") was killed";
  auto& out = c.by_id[s.id];
  int errors = 0;
  for (auto& [i, e] : out.last)
    if (e.finish == serve::finish_reason::error) {
      ++errors;
      CHECK(e.error.find(named) != std::string::npos);
    }
  CHECK(errors > 0);  // the choices still running when it died
  // Every later call says the same.
  collector c2;
  const auto late = remote->submit(sampled({1, 2}), c2.sink());
  CHECK(late.status == 503);
  CHECK(late.message.find(named) != std::string::npos);
  CHECK_THROWS_WITH_AS(remote->update_weights(1, byte_weights(6)), doctest::Contains(named.c_str()),
                       error);
}

TEST_CASE("an engine process that cannot start is named with how it ended") {
  remote_fixture f;
  auto o = f.options();
  o.executable = "/bin/false";
  CHECK_THROWS_WITH_AS(actors::spawn_engine_process(byte_weights(5), f.tok(), f.ec, o),
                       doctest::Contains("exited with code 1 before it started"), error);
  // the rendezvous folder does not stay behind
  for (const auto& e : std::filesystem::directory_iterator(f.dir.path))
    CHECK(e.path().filename().string().rfind(".engine-", 0) != 0);
}

TEST_CASE("an engine process killed under a weight update is named, and its backend closes") {
  remote_fixture f;
  for (int round = 0; round < 3; ++round) {
    auto remote = actors::spawn_engine_process(byte_weights(5), f.tok(), f.ec, f.options());
    const pid_t pid = engine_child();
    REQUIRE(pid > 0);
    ::kill(pid, SIGKILL);
    CHECK_THROWS_AS(remote->update_weights(1, byte_weights(6)), error);
    const auto t0 = std::chrono::steady_clock::now();
    std::string why;
    while ((why = remote->failure()).empty() &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(why.find("was killed") != std::string::npos);
    remote.reset();  // returns: nothing waits on the dead process
  }
}
