// run.json (runtime/monitor/run_status): what a writer says reads back field for field, a
// "running" record whose process is gone reads as lost, a file that is not a run record reads as
// failed naming the file, and a writer dropped without finish() leaves failed behind.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "runtime/monitor/run_status.hpp"
#include "test_util.hpp"

using namespace zf;
using namespace zf::monitor;

namespace {

void write_text(const std::filesystem::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
}

// The pid of a child that has exited and been reaped: no process has it (until reused).
long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  int st = 0;
  REQUIRE(::waitpid(child, &st, 0) == child);
  return static_cast<long>(child);
}

}  // namespace

TEST_CASE("run status: a writer's record reads back, running and then finished") {
  testing::temp_dir d("run_status");
  const auto dir = d.path / "run";  // created by the writer
  CHECK_FALSE(read_run_status(dir).has_value());
  const std::string toml = "[train]\nsteps = 7\n# \"quoted\" and \\ back-slashed\n";
  run_status_writer w(dir, "train", toml, 7);
  CHECK(w.ok());
  auto st = read_run_status(dir);
  REQUIRE(st.has_value());
  CHECK(st->kind == "train");
  CHECK(st->state == run_state::running);  // this process is alive
  CHECK(st->pid == static_cast<long>(::getpid()));
  CHECK(st->total_steps == 7);
  CHECK(st->config == toml);
  CHECK(st->start_unix > 1.7e9);
  CHECK(st->end_unix == 0);
  CHECK(st->message.empty());
  CHECK(st->host == w.status().host);

  w.finish(run_state::interrupted, "stopped after step 3");
  st = read_run_status(dir);
  REQUIRE(st.has_value());
  CHECK(st->state == run_state::interrupted);
  CHECK(st->message == "stopped after step 3");
  CHECK(st->end_unix >= st->start_unix);
  CHECK(st->config == toml);
  CHECK_FALSE(std::filesystem::exists(dir / "run.json.tmp"));  // renamed over run.json
  CHECK(std::string(to_string(run_state::interrupted)) == "interrupted");
}

TEST_CASE("run status: running with the pid of an exited process reads as lost") {
  testing::temp_dir d("run_status_lost");
  run_status_writer w(d.path, "rl", "", 10);
  const auto alive = read_run_status(d.path);
  REQUIRE(alive.has_value());
  REQUIRE(alive->state == run_state::running);
  // the same record, but from a process that is gone (same host: the reader can tell)
  const long pid = dead_pid();
  std::ifstream in(d.path / "run.json");
  auto j = nlohmann::json::parse(in);
  in.close();
  j["pid"] = pid;
  write_text(d.path / "run.json", j.dump());
  const auto st = read_run_status(d.path);
  REQUIRE(st.has_value());
  CHECK(st->state == run_state::lost);
  CHECK(st->pid == pid);
  CHECK(st->kind == "rl");
  CHECK(testing::contains(st->message, std::to_string(pid)));
  w.finish(run_state::finished);  // rewrites it whole: finished, this process again
  CHECK(read_run_status(d.path)->state == run_state::finished);
}

TEST_CASE("run status: a garbage or unknown-state run.json reads as failed naming the file") {
  testing::temp_dir d("run_status_bad");
  const auto file = d.path / "run.json";
  for (const std::string text :
       {"not json at all", "[1, 2, 3]", "{\"kind\": \"train\", \"state\": \"dancing\"}",
        "{\"kind\": \"train\", \"state\": \"running\", \"pid\": \"x\"}", ""}) {
    CAPTURE(text);
    write_text(file, text);
    const auto st = read_run_status(d.path);
    REQUIRE(st.has_value());
    CHECK(st->state == run_state::failed);
    CHECK(testing::contains(st->message, file.string()));
  }
  write_text(file, "{\"kind\": \"train\", \"state\": \"dancing\"}");
  CHECK(testing::contains(read_run_status(d.path)->message, "unknown state 'dancing'"));
}

TEST_CASE("run status: a writer destroyed without finish() leaves failed, with an end time") {
  testing::temp_dir d("run_status_drop");
  {
    run_status_writer w(d.path, "train", "", 5);
    REQUIRE(read_run_status(d.path)->state == run_state::running);
  }
  const auto st = read_run_status(d.path);
  REQUIRE(st.has_value());
  CHECK(st->state == run_state::failed);
  CHECK(st->message == "ended without a result");
  CHECK(st->end_unix >= st->start_unix);
  CHECK(st->total_steps == 5);
}
