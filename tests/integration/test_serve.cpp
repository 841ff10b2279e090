// `zeroflow serve` and `zeroflow generate` as a user meets them, on the Hugging Face fixtures
// (tests/golden/hf, written by the PyTorch twin): the server answers over real HTTP with the
// twin's greedy tokens (and its log-probabilities), and stops cleanly on Ctrl-C.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>

#include "helpers.hpp"
#include "runtime/text/text_stream.hpp"
#include "runtime/text/tokenizer.hpp"
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

// A server process on an ephemeral port, recording in the test's own folder (not runs/ under
// the build's); SIGINT and reaped at scope exit.
struct server : serve_process {
  server(const std::string& args, const temp_dir& d)
      : serve_process("--run-dir " + (d / "serve-run").string() + " " + args, d / "serve.log") {}
  std::string post(const std::string& path, const nlohmann::json& body) const {
    return sh("curl -s -X POST -H 'Content-Type: application/json' --data-binary '" + body.dump() +
              "' http://127.0.0.1:" + std::to_string(port) + path);
  }
};

}  // namespace

TEST_CASE("serve: Hugging Face GPT-2 and Llama answer over HTTP with the twin's greedy tokens") {
  for (std::string model : {"gpt2", "llama", "llama31"}) {
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

TEST_CASE("serve: --graph runs a user's graph file (its own model and engine config)") {
  temp_dir d("servegraph");
  auto [prompt, want] = golden_p0("gpt2");
  // the built-in graph with the model and a smaller engine named in the file
  std::string text = slurp(ZF_SOURCE_DIR "/examples/graphs/serve.toml");
  const std::string engine = "type = \"engine\"\n";
  text.replace(text.find(engine), engine.size(),
               engine + "options = { hf = \"" + k_hf + "tiny-gpt2\" }\n" +
                   "config = { engine = { max_seqs = 2 } }\n");
  std::ofstream(d / "g.toml") << text;
  server s("--graph " + (d / "g.toml").string(), d);
  auto r = nlohmann::json::parse(
      s.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}}));
  REQUIRE_MESSAGE(r.contains("choices"), r.dump());
  CHECK(r["choices"][0]["text"] == want);
  CHECK(s.stop() == 0);
}

TEST_CASE("serve: --api-key, --api-key-file and $ZEROFLOW_API_KEY guard /v1/, not /health") {
  temp_dir d("apikey");
  auto code = [](const server& s, const std::string& path, const std::string& key) {
    return sh("curl -s -o /dev/null -w '%{http_code}' " +
              (key.empty() ? std::string() : "-H 'Authorization: Bearer " + key + "' ") +
              (path.starts_with("/v1/completions")
                   ? "-X POST -H 'Content-Type: application/json' --data-binary "
                     "'{\"prompt\": \"a\", \"max_tokens\": 1}' "
                   : "") +
              "http://127.0.0.1:" + std::to_string(s.port) + path);
  };
  {
    server s("--hf " + k_hf + "tiny-gpt2 --api-key sk-a --api-key sk-b", d);
    CHECK(code(s, "/v1/completions", "") == "401");
    CHECK(code(s, "/v1/completions", "sk-c") == "401");
    CHECK(code(s, "/v1/completions", "sk-b") == "200");
    CHECK(code(s, "/v1/models", "sk-a") == "200");
    CHECK(code(s, "/health", "") == "200");
    CHECK(code(s, "/metrics", "") == "200");  // open unless --protect-metrics
  }
  {
    std::ofstream(d / "keys.txt") << "sk-file-1\n\nsk-file-2  \n";
    ::setenv("ZEROFLOW_API_KEY", "sk-env", 1);
    server s("--hf " + k_hf + "tiny-gpt2 --api-key-file " + (d / "keys.txt").string() +
                 " --protect-metrics",
             d);
    ::unsetenv("ZEROFLOW_API_KEY");
    CHECK(code(s, "/v1/models", "sk-file-2") == "200");
    CHECK(code(s, "/v1/models", "sk-env") == "200");
    CHECK(code(s, "/v1/models", "sk-a") == "401");
    CHECK(code(s, "/metrics", "") == "401");
    CHECK(code(s, "/metrics", "sk-file-1") == "200");
    CHECK(code(s, "/health", "") == "200");
  }
  {  // every interface and no key: served, with a warning
    server s("--hf " + k_hf + "tiny-gpt2 --host 0.0.0.0", d);
    CHECK(contains(slurp(s.log), "WARNING: serving on 0.0.0.0 without an API key"));
  }
  {  // loopback and no key: no warning
    server s("--hf " + k_hf + "tiny-gpt2", d);
    CHECK_FALSE(contains(slurp(s.log), "WARNING"));
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
  auto r3 = zeroflow("serve --hf " + k_hf + "tiny-gpt2 --max-seqs 300 --token-budget 256", d.path);
  CHECK(r3.code != 0);
  CHECK(contains(r3.out, "max_seqs (300) must not exceed the token budget (256)"));
}

namespace {

// One HTTP/1.1 exchange over a fresh socket (Connection: close); returns the raw response.
// cut_after > 0: close the socket after reading that many bytes (a client that goes away).
std::string http(int port, const std::string& method, const std::string& path,
                 const std::string& body, std::size_t cut_after = 0) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return {};
  }
  std::string req =
      method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  if (write(fd, req.data(), req.size()) < 0) {
    close(fd);
    return {};
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    out.append(buf, static_cast<std::size_t>(n));
    if (cut_after && out.size() >= cut_after) break;
  }
  close(fd);
  return out;
}

long rss_kib(pid_t pid) {
  auto s = slurp("/proc/" + std::to_string(pid) + "/status");
  auto p = s.find("VmRSS:");
  return p == std::string::npos ? -1 : std::atol(s.c_str() + p + 6);
}

double metric(const std::string& text, const std::string& name) {
  auto p = text.find("\n" + name);
  if (p == std::string::npos) return -1;
  p = text.find(' ', p + 1);
  return std::atof(text.c_str() + p + 1);
}

// /metrics once done(text) holds, polled every 20 ms for up to 10 s (the last text otherwise):
// checks wait for the event they mean instead of sleeping a guess.
template <class Done>
std::string metrics_when(int port, Done done) {
  std::string text;
  for (int i = 0; i < 500; ++i) {
    text = http(port, "GET", "/metrics", "");
    if (done(text)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return text;
}

}  // namespace

// A bounded soak: clients stream, wait for whole answers, send garbage and hang up mid-stream,
// for ZF_SOAK_SECONDS (default 40) after a warm-up. Resident memory must stay flat and at the
// end no sequence may hold a KV block.
TEST_CASE("serve: soak under mixed load keeps memory flat and frees the KV pool") {
  const char* env = std::getenv("ZF_SOAK_SECONDS");
  const int seconds = env ? std::atoi(env) : 40;
  temp_dir d("soak");
  server s("--hf " + k_hf + "tiny-gpt2 --max-seqs 16 --token-budget 64", d);
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, cut{0}, bad{0};
  auto client = [&](int id) {
    std::mt19937 g(static_cast<unsigned>(id));
    while (!stop) {
      nlohmann::json body = {{"model", "tiny-gpt2"},
                             {"prompt", std::string(1 + g() % 200, 'a' + id % 26)},
                             {"max_tokens", 1 + static_cast<int>(g() % 40)},
                             {"temperature", 0.8},
                             {"n", 1 + static_cast<int>(g() % 2)}};
      switch (g() % 5) {
        case 0:  // hang up mid-stream
          body["stream"] = true;
          http(s.port, "POST", "/v1/completions", body.dump(), 300);
          ++cut;
          break;
        case 1:  // malformed
          if (contains(http(s.port, "POST", "/v1/completions", "{\"prompt\": [1,"), " 400 ")) ++bad;
          break;
        case 2:
          body["stream"] = true;
          if (contains(http(s.port, "POST", "/v1/completions", body.dump()), "[DONE]")) ++ok;
          break;
        default:
          if (contains(http(s.port, "POST", "/v1/completions", body.dump()), "\"usage\"")) ++ok;
      }
    }
  };
  auto phase = [&](int secs) {
    stop = false;
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; ++i) ts.emplace_back(client, i);
    std::this_thread::sleep_for(std::chrono::seconds(secs));
    stop = true;
    for (auto& t : ts) t.join();
  };
  phase(std::max(5, seconds / 4));  // warm-up: arenas, caches, pool pages touched
  const long rss0 = rss_kib(s.pid);
  phase(seconds);
  // the cut requests' cancels land: wait until the pool is empty (with a deadline)
  auto m = metrics_when(
      s.port, [](const std::string& t) { return metric(t, "zeroflow_kv_blocks_used{") == 0; });
  const long rss1 = rss_kib(s.pid);
  MESSAGE("soak: ok " << ok.load() << ", cut " << cut.load() << ", malformed " << bad.load()
                      << "; RSS " << rss0 << " -> " << rss1 << " KiB");
  CHECK(ok > 20);
  CHECK(cut > 5);
  CHECK(bad > 5);
  CHECK(metric(m, "zeroflow_kv_blocks_used{") == 0);
  CHECK(metric(m, "zeroflow_running_sequences{") == 0);
  CHECK(metric(m, "zeroflow_requests_in_flight") == 0);
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's quarantine holds freed memory by design: RSS says nothing here.
  MESSAGE("RSS check skipped under AddressSanitizer");
#elif defined(__SANITIZE_THREAD__)
  // Nor under ThreadSanitizer: its shadow memory grows with every new address the server touches
  // and its allocator keeps freed blocks in per-thread caches (86 -> 97 MiB here, nothing leaked).
  MESSAGE("RSS check skipped under ThreadSanitizer");
#else
  CHECK(rss1 - rss0 < std::max(8192L, rss0 / 20));  // < 5% (at least 8 MiB) growth
#endif
  CHECK(contains(http(s.port, "GET", "/health", ""), " 200 "));
}

namespace {

std::string body_of(const std::string& response) {
  auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? std::string{} : response.substr(p + 4);
}

// Concatenated choice texts of an SSE response (chunked framing included: only data lines).
std::map<int, std::string> sse_texts(const std::string& response, bool* done) {
  std::map<int, std::string> out;
  *done = false;
  std::size_t p = 0;
  while ((p = response.find("data: ", p)) != std::string::npos) {
    auto e = response.find("\n", p);
    std::string line = response.substr(p + 6, e - p - 6);
    p = e;
    if (line.rfind("[DONE]", 0) == 0) {
      *done = true;
      continue;
    }
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("choices")) continue;
    for (auto& c : j["choices"]) out[c["index"].get<int>()] += c.value("text", "");
  }
  return out;
}

}  // namespace

TEST_CASE("serve: the real server speaks the protocol and keeps serving after bad requests") {
  temp_dir d("proto");
  server s("--hf " + k_hf + "tiny-gpt2", d);
  const std::string url = "/v1/completions";
  nlohmann::json base = {{"prompt", "Call me Ishmael"}, {"max_tokens", 16}, {"temperature", 0}};
  auto plain = nlohmann::json::parse(body_of(http(s.port, "POST", url, base.dump())));
  const std::string full = plain["choices"][0]["text"];
  REQUIRE(full.size() > 6);
  // streaming gives the same text, then [DONE]
  auto st = base;
  st["stream"] = true;
  bool done = false;
  auto texts = sse_texts(http(s.port, "POST", url, st.dump()), &done);
  CHECK(done);
  CHECK(texts[0] == full);
  // stop: the text ends before the stop string
  auto sp = base;
  sp["stop"] = full.substr(full.size() / 2, 2);
  auto stopped = nlohmann::json::parse(body_of(http(s.port, "POST", url, sp.dump())));
  CHECK(stopped["choices"][0]["text"] == full.substr(0, full.find(sp["stop"].get<std::string>())));
  CHECK(stopped["choices"][0]["finish_reason"] == "stop");
  // n = 2 sampled choices
  auto n2 = base;
  n2["n"] = 2;
  n2["temperature"] = 1.0;
  n2["seed"] = 3;
  auto two = nlohmann::json::parse(body_of(http(s.port, "POST", url, n2.dump())));
  REQUIRE(two["choices"].size() == 2);
  CHECK(two["usage"]["completion_tokens"] == 32);
  // a client that hangs up mid-stream frees its sequences. 8 choices of 110 tokens (~900
  // tokens of work) so that, even on a loaded machine, the hang-up lands before they finish.
  auto longer = st;
  longer["max_tokens"] = 110;
  longer["n"] = 8;
  longer["ignore_eos"] = true;
  http(s.port, "POST", url, longer.dump(), 200);
  // bad requests: status and OpenAI error body
  struct bad {
    std::string body;
    std::string status, message;
  };
  for (const bad& b : std::vector<bad>{
           {"{\"prompt\": \"x\",", " 400 ", "parse"},
           {nlohmann::json{{"prompt", std::string(3000, 'x')}, {"max_tokens", 4}}.dump(), " 400 ",
            "maximum context length is 128"},
           {nlohmann::json{{"prompt", "x"}, {"max_tokens", -3}}.dump(), " 400 ", "max_tokens"},
           {nlohmann::json{{"prompt", "x"}, {"model", "gpt-5"}}.dump(), " 404 ",
            "The model `gpt-5` does not exist"}}) {
    auto r = http(s.port, "POST", url, b.body);
    CAPTURE(r);
    CHECK(contains(r, b.status));
    CHECK(contains(r, "\"error\""));
    CHECK(contains(r, b.message));
  }
  // finished choices by reason: the hung-up request's unfinished choices are cancelled. The
  // cancel lands when the engine notices the hang-up: wait for it (with a deadline), not a
  // fixed time (a fixed 300 ms was too short once under the sanitizers).
  const std::string cancelled =
      "zeroflow_request_finished_total{model=\"tiny-gpt2\",reason=\"cancelled\"}";
  const std::string m = metrics_when(s.port, [&](const std::string& t) {
    return metric(t, cancelled) >= 1 && metric(t, "zeroflow_kv_blocks_used{") == 0;
  });
  CHECK(metric(m, "zeroflow_kv_blocks_used{") == 0);
  CHECK(metric(m, cancelled) >= 1);
  // still serving, same answer
  auto again = nlohmann::json::parse(body_of(http(s.port, "POST", url, base.dump())));
  CHECK(again["choices"][0]["text"] == full);
  CHECK(contains(http(s.port, "GET", "/v1/models", ""), "\"tiny-gpt2\""));
}

TEST_CASE("serve: a repeated prompt is served from the prefix cache with the same answer") {
  const std::string prompt =
      "It is a way I have of driving off the spleen and regulating the circulation. Whenever I "
      "find myself growing grim";
  nlohmann::json req = {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}};
  auto run = [&](const std::string& flags) {
    temp_dir d("prefix");
    server s("--hf " + k_hf + "tiny-gpt2" + flags, d);
    std::vector<std::string> texts;
    for (int i = 0; i < 3; ++i) {
      const std::string raw = http(s.port, "POST", "/v1/completions", req.dump());
      CAPTURE(raw);
      auto r = nlohmann::json::parse(body_of(raw));
      REQUIRE(r["choices"][0]["text"].is_string());
      texts.push_back(r["choices"][0]["text"]);
      CHECK(r["usage"]["prompt_tokens"].get<int>() > 48);
    }
    auto m = http(s.port, "GET", "/metrics", "");
    return std::pair{texts, metric(m, "zeroflow_prefix_cache_hits_total{")};
  };
  auto [cached, hits] = run("");
  auto [plain, none] = run(" --no-prefix-caching");
  CHECK(cached[0] == plain[0]);
  CHECK(cached[1] == cached[0]);
  CHECK(cached[2] == cached[0]);
  CHECK(plain[2] == plain[0]);
  CHECK(hits >= 2 * 48);  // the 2nd and 3rd requests share at least three 16-token blocks
  CHECK(none == 0);
}

namespace {

// The JSON data lines of an SSE response, [DONE] left out.
std::vector<nlohmann::json> sse_chunks(const std::string& response) {
  std::vector<nlohmann::json> out;
  std::size_t p = 0;
  while ((p = response.find("data: ", p)) != std::string::npos) {
    auto e = response.find("\n", p);
    std::string line = response.substr(p + 6, e - p - 6);
    p = e;
    if (line.rfind("[DONE]", 0) != 0) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

}  // namespace

TEST_CASE("serve: logprobs over HTTP are the twin's log_softmax, the greedy token on top") {
  temp_dir d("logprobs");
  server s("--hf " + k_hf + "tiny-gpt2", d);
  auto g = storage::safetensors_file::open(k_hf + "golden.safetensors");
  auto tok = tokenizer::load_hf(k_hf + "tiny-gpt2/tokenizer.json");
  const auto ids = g.to_i32("gpt2.p0.ids");
  const auto logits = g.to_f32("gpt2.p0.logits");  // [T, V], the float64 twin's
  const auto greedy = g.to_i32("gpt2.greedy");
  const int T = static_cast<int>(ids.size()), V = static_cast<int>(logits.size()) / T;
  // log_softmax of the last prompt position: the first generated token's distribution
  const float* row = logits.data() + static_cast<std::size_t>(T - 1) * V;
  const double mx = *std::max_element(row, row + V);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
  auto ref = [&](int v) { return row[v] - mx - std::log(sum); };
  auto str = [&](int id) { return utf8_sanitize(tok.token_bytes(id)); };

  // Completions, legacy format: logprobs 5 (the greedy token is among the 5).
  nlohmann::json body = {{"prompt", std::vector<int>(ids.begin(), ids.end())},
                         {"max_tokens", 6},
                         {"temperature", 0},
                         {"logprobs", 5}};
  auto r = nlohmann::json::parse(body_of(http(s.port, "POST", "/v1/completions", body.dump())));
  REQUIRE_MESSAGE(r.contains("choices"), r.dump());
  const auto& lp = r["choices"][0]["logprobs"];
  REQUIRE(lp["tokens"].size() == 6);
  REQUIRE(lp["token_logprobs"].size() == 6);
  REQUIRE(lp["text_offset"].size() == 6);
  CHECK(lp["text_offset"][0] == 0);
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK(lp["tokens"][i] == str(greedy[i]));
    const double chosen = lp["token_logprobs"][i];
    CHECK(chosen < 0);
    const auto& top = lp["top_logprobs"][i];
    CHECK(top.size() <= 5);  // fewer where tokens share a string (U+FFFD of partial bytes)
    CHECK(top.at(lp["tokens"][i].get<std::string>()) == chosen);
    double best = -1e9;
    for (auto& [k, v] : top.items()) best = std::max(best, v.get<double>());
    CHECK(best == chosen);  // the greedy token's logprob is the top alternative's
    if (i > 0) CHECK(lp["text_offset"][i] >= lp["text_offset"][i - 1]);
  }
  CHECK(std::abs(lp["token_logprobs"][0].get<double>() - ref(greedy[0])) < 1e-4);
  // the twin's 5 most likely first tokens, with its values
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](int a, int b) { return row[a] > row[b]; });
  for (int j = 0; j < 5; ++j) {
    CAPTURE(j);
    REQUIRE(lp["top_logprobs"][0].contains(str(order[j])));
    CHECK(std::abs(lp["top_logprobs"][0][str(order[j])].get<double>() - ref(order[j])) < 1e-4);
  }

  // Chat: logprobs true, top_logprobs 3; streamed, the chunks' entries add up to the same list.
  nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", "Call me Ishmael"}}}},
                         {"max_tokens", 6},
                         {"temperature", 0},
                         {"logprobs", true},
                         {"top_logprobs", 3}};
  auto c =
      nlohmann::json::parse(body_of(http(s.port, "POST", "/v1/chat/completions", chat.dump())));
  REQUIRE_MESSAGE(c.contains("choices"), c.dump());
  const auto& content = c["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == c["usage"]["completion_tokens"].get<std::size_t>());
  REQUIRE(!content.empty());
  for (const auto& e : content) {
    CAPTURE(e.dump());
    std::string bytes;
    for (auto& b : e["bytes"]) bytes += static_cast<char>(b.get<int>());
    CHECK(utf8_sanitize(bytes) == e["token"]);
    REQUIRE(e["top_logprobs"].size() == 3);
    CHECK(e["top_logprobs"][0]["token"] == e["token"]);
    CHECK(e["top_logprobs"][0]["logprob"] == e["logprob"]);
    CHECK(e["top_logprobs"][1]["logprob"] <= e["top_logprobs"][0]["logprob"]);
    CHECK(e["top_logprobs"][2]["logprob"] <= e["top_logprobs"][1]["logprob"]);
  }
  chat["stream"] = true;
  nlohmann::json streamed = nlohmann::json::array();
  for (const auto& chunk : sse_chunks(http(s.port, "POST", "/v1/chat/completions", chat.dump())))
    for (const auto& ch : chunk["choices"])
      if (ch["logprobs"].is_object())
        for (const auto& e : ch["logprobs"]["content"]) streamed.push_back(e);
  CHECK(streamed == content);

  chat["top_logprobs"] = 25;
  auto bad = http(s.port, "POST", "/v1/chat/completions", chat.dump());
  CHECK(contains(bad, " 400 "));
  CHECK(contains(bad, "'top_logprobs' must be between 0 and 20, got 25"));
}

TEST_CASE("serve: POST /v1/update_weights_from_disk swaps the running server's weights") {
  temp_dir d("weights");
  server s("--hf " + k_hf + "tiny-gpt2 --enable-weight-updates", d);
  const std::string url = "/v1/completions", update = "/v1/update_weights_from_disk";
  const nlohmann::json req = {{"prompt", "Call me Ishmael"}, {"max_tokens", 8}, {"temperature", 0}};
  auto complete = [&] {
    return nlohmann::json::parse(body_of(http(s.port, "POST", url, req.dump())));
  };
  const auto before = complete();
  CHECK(before["system_fingerprint"] == "zf-0");
  // The folder it serves, again, as version 3: the same answer under the new fingerprint.
  const auto up = http(s.port, "POST", update,
                       nlohmann::json{{"path", k_hf + "tiny-gpt2"}, {"version", 3}}.dump());
  CAPTURE(up);
  CHECK(contains(up, " 200 "));
  const auto r = nlohmann::json::parse(body_of(up));
  CHECK(r["success"] == true);
  CHECK(r["version"] == 3);
  const auto after = complete();
  CHECK(after["system_fingerprint"] == "zf-3");
  CHECK(after["choices"][0]["text"] == before["choices"][0]["text"]);
  // Another model, a missing folder: 400 naming the problem, and version 3 serves on.
  for (auto [path, message] : {std::pair{k_hf + "tiny-llama", "another architecture"},
                               std::pair{(d / "nothing").string(), "no such folder"}}) {
    const auto bad = http(s.port, "POST", update, nlohmann::json{{"path", path}}.dump());
    CAPTURE(bad);
    CHECK(contains(bad, " 400 "));
    CHECK(contains(bad, message));
  }
  const auto still = complete();
  CHECK(still["system_fingerprint"] == "zf-3");
  CHECK(still["choices"][0]["text"] == before["choices"][0]["text"]);
  CHECK(metric(http(s.port, "GET", "/metrics", ""), "zeroflow_weights_version{") == 3);
}
