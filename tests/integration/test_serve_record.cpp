// `zeroflow serve` records itself in a run folder for the console (issue 11): --run-dir DIR (or
// runs/serve-<time> under the working folder) gets metrics.jsonl, a line every
// server.record_every_s seconds whose windows count the requests served, and run.json, which
// says finished after Ctrl-C (a server's clean end); --run-dir "" records nothing.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <thread>

#include "helpers.hpp"
#include "runtime/monitor/run_status.hpp"

using namespace zf;
using namespace zf::testing;
using nlohmann::json;

namespace {

const std::string k_model = ZF_SOURCE_DIR "/tests/golden/hf/tiny-gpt2";

// `zeroflow serve --hf tiny-gpt2 ARGS` started in folder `cwd` on an ephemeral port.
struct server : serve_process {
  server(const std::string& args, const std::filesystem::path& cwd)
      : serve_process("--hf " + k_model + " " + args, cwd / "serve.log", cwd) {}
  // A greedy completion of max_tokens tokens; its finish_reason.
  std::string complete(int max_tokens) const {
    const json body = {{"prompt", "The whale"}, {"max_tokens", max_tokens}, {"temperature", 0}};
    const std::string cmd = "curl -s -X POST -H 'Content-Type: application/json' --data-binary '" +
                            body.dump() + "' http://127.0.0.1:" + std::to_string(port) +
                            "/v1/completions";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    pclose(p);
    const json r = json::parse(out);
    REQUIRE_MESSAGE(r.contains("choices"), out);
    return r["choices"][0]["finish_reason"];
  }
};

std::vector<json> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) {
    CAPTURE(line);
    rows.push_back(json::parse(line));
    REQUIRE(rows.back().is_object());
  }
  return rows;
}

}  // namespace

TEST_CASE("serve record: --run-dir gets metrics.jsonl and run.json, finished after Ctrl-C") {
  temp_dir d("serve_record_cli");
  const auto dir = d / "run";
  server s("--run-dir " + dir.string() + " --record-every-s 0.1", d.path);
  std::map<std::string, uint64_t> reasons;
  for (int i = 0; i < 3; ++i) ++reasons[s.complete(4 + i)];
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto live = monitor::read_run_status(dir);
  REQUIRE(live.has_value());
  CHECK(monitor::to_string(live->state) == std::string("running"));
  CHECK(live->pid == s.pid);
  CHECK(s.stop() == 0);

  const auto st = monitor::read_run_status(dir);
  REQUIRE(st.has_value());
  CHECK(st->kind == "serve");
  CHECK(monitor::to_string(st->state) == std::string("finished"));
  CHECK(contains(st->config, "record_every_s = 0.1"));
  const std::vector<json> rows = read_lines(dir / "metrics.jsonl");
  REQUIRE(rows.size() >= 3);
  double t = 0;
  bool tokens = false;
  std::map<std::string, uint64_t> counted;
  for (const json& r : rows) {
    CAPTURE(r.dump());
    CHECK(r["t"].get<double>() > t);
    t = r["t"].get<double>();
    tokens = tokens || r.value("tokens_per_s", 0.0) > 0;
    for (const char* why : {"stop", "length", "cancelled", "error"})
      counted[why] += r[std::string("requests_") + why].get<uint64_t>();
  }
  CHECK(tokens);
  for (const char* why : {"stop", "length", "cancelled", "error"}) {
    CAPTURE(why);
    CHECK(counted[why] == reasons[why]);  // each finished request counted once, by its reason
  }
}

TEST_CASE("serve record: runs/serve-<time> by default, nothing with an empty --run-dir") {
  temp_dir d("serve_record_default");
  {
    server s("", d.path);
    CHECK(s.stop() == 0);
    CHECK(contains(slurp(s.log), "recording the server in runs/serve-"));
  }
  std::vector<std::filesystem::path> runs;
  for (const auto& e : std::filesystem::directory_iterator(d / "runs")) runs.push_back(e.path());
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].filename().string().starts_with("serve-"));
  const auto st = monitor::read_run_status(runs[0]);
  REQUIRE(st.has_value());
  CHECK(monitor::to_string(st->state) == std::string("finished"));

  temp_dir off("serve_record_off");
  server s("--run-dir ''", off.path);
  CHECK(s.stop() == 0);
  CHECK(!contains(slurp(s.log), "recording the server"));
  CHECK(!std::filesystem::exists(off / "runs"));
}

TEST_CASE("serve --console: the console under /console lists the server's run and the others") {
  temp_dir d("serve_console");
  std::filesystem::create_directories(d / "runs" / "old");
  std::ofstream(d / "runs" / "old" / "metrics.jsonl")
      << "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": 2.5}\n";
  server s("--console", d.path);
  CHECK(contains(slurp(s.log),
                 "console on http://127.0.0.1:" + std::to_string(s.port) + "/console/"));
  auto get = [&](const std::string& path) {
    std::string out;
    FILE* p = popen(("curl -s http://127.0.0.1:" + std::to_string(s.port) + path).c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    pclose(p);
    return out;
  };
  CHECK(contains(get("/console/"), "<html"));
  json runs;
  for (int i = 0; i < 50; ++i) {  // the server's own folder appears with its first line
    runs = json::parse(get("/console/api/runs"))["runs"];
    if (runs.size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(runs.size() == 2);
  std::map<std::string, json> by_name;
  for (const auto& r : runs) by_name[r["name"]] = r;
  CHECK(by_name["old"]["rows"] == 2);
  CHECK(by_name["old"]["state"] == "unknown");  // no run.json: a folder of metrics only
  bool serving = false;
  for (const auto& [name, r] : by_name) serving |= r["kind"] == "serve" && r["state"] == "running";
  CHECK(serving);
  CHECK(s.stop() == 0);
}
