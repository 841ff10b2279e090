// `zeroflow serve` and `zeroflow generate` as a user meets them, on the Hugging Face fixtures
// (tests/golden/hf, written by the PyTorch twin): the server answers over real HTTP with the
// twin's greedy tokens, and stops cleanly on Ctrl-C.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "helpers.hpp"
#include "runtime/text_stream.hpp"
#include "runtime/tokenizer.hpp"
#include "storage/safetensors.hpp"

using namespace zf;
using namespace zf::testing;

namespace {

const std::string k_hf = ZF_SOURCE_DIR "/tests/golden/hf/";

// The twin's greedy continuation of prompt p0 as text.
std::pair<std::string, std::string> golden_p0(const std::string& model) {
  auto g = storage::safetensors_file::open(k_hf + "golden.safetensors");
  auto tok = tokenizer::load_hf(k_hf + "tiny-" + model + "/tokenizer.json");
  auto ids = g.to_i32(model + ".greedy");
  return {g.metadata().at(model + ".p0.text"),
          utf8_sanitize(tok.decode(std::vector<int>(ids.begin(), ids.end())))};
}

std::string sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// A server process on an ephemeral port; SIGINT and reaped at scope exit.
struct server {
  pid_t pid = -1;
  int port = 0;
  std::filesystem::path log;
  server(const std::string& args, const temp_dir& d) : log(d / "serve.log") {
    pid = fork();
    if (pid == 0) {
      std::string cmd = std::string(ZF_BINARY_DIR) + "/zeroflow serve --port 0 --threads 1 " +
                        args + " > " + log.string() + " 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300 && port == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto s = slurp(log);
      auto at = s.find("http://127.0.0.1:");
      if (at != std::string::npos) port = std::atoi(s.c_str() + at + 17);
    }
    REQUIRE_MESSAGE(port > 0, slurp(log));
  }
  int stop() {
    if (pid <= 0) return -1;
    kill(pid, SIGINT);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~server() { stop(); }
  std::string post(const std::string& path, const nlohmann::json& body) const {
    return sh("curl -s -X POST -H 'Content-Type: application/json' --data-binary '" + body.dump() +
              "' http://127.0.0.1:" + std::to_string(port) + path);
  }
};

}  // namespace

TEST_CASE("serve: Hugging Face GPT-2 and Llama answer over HTTP with the twin's greedy tokens") {
  for (std::string model : {"gpt2", "llama"}) {
    CAPTURE(model);
    temp_dir d("serve");
    server s("--hf " + k_hf + "tiny-" + model, d);
    auto [prompt, want] = golden_p0(model);
    auto r = nlohmann::json::parse(s.post(
        "/v1/completions",
        {{"model", "tiny-" + model}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}}));
    REQUIRE_MESSAGE(r.contains("choices"), r.dump());
    CHECK(r["choices"][0]["text"] == want);
    CHECK(r["usage"]["completion_tokens"] == 12);
    auto health =
        sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(s.port) +
           "/health");
    CHECK(health == "200");
    CHECK(s.stop() == 0);
    CHECK(contains(slurp(s.log), "server stopped"));
  }
}

TEST_CASE("serve: generate streams the twin's greedy continuation") {
  temp_dir d("gen");
  auto [prompt, want] = golden_p0("gpt2");
  auto r = zeroflow("generate --hf " + k_hf + "tiny-gpt2 --prompt '" + prompt +
                        "' --max-tokens 12 --temperature 0 --threads 1",
                    d.path);
  CHECK(r.code == 0);
  CHECK(contains(r.out, prompt + want));
}

TEST_CASE("serve: bad model folders and arguments give one clear message") {
  temp_dir d("servebad");
  auto r = zeroflow("serve --hf " + (d.path / "nothing").string(), d.path);
  CHECK(r.code != 0);
  CHECK(contains(r.out, "config.json"));
  auto r2 = zeroflow("serve", d.path);
  CHECK(r2.code != 0);
  CHECK(contains(r2.out, "exactly one of --checkpoint DIR and --hf DIR"));
}
