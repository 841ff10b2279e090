#include "runtime/monitor/run_status.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace zf::monitor {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

std::optional<run_state> parse_state(const std::string& s) {
  for (run_state st : {run_state::running, run_state::finished, run_state::failed,
                       run_state::interrupted, run_state::lost})
    if (s == to_string(st)) return st;
  return std::nullopt;
}

// A process of ours that is gone: kill(pid, 0) says ESRCH. EPERM means it exists (another user).
bool process_gone(long pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

const char* to_string(run_state s) {
  switch (s) {
    case run_state::running:
      return "running";
    case run_state::finished:
      return "finished";
    case run_state::failed:
      return "failed";
    case run_state::interrupted:
      return "interrupted";
    case run_state::lost:
      return "lost";
  }
  return "unknown";
}

std::optional<run_status> read_run_status(const fs::path& dir) {
  const fs::path file = dir / "run.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  run_status st;
  auto bad = [&](const std::string& why) {
    st.state = run_state::failed;
    st.message = fmt::format("{}: {}", file.string(), why);
    return st;
  };
  const json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  try {
    st.kind = j.value("kind", "");
    const auto state = parse_state(j.value("state", ""));
    if (!state) return bad(fmt::format("unknown state '{}'", j.value("state", "")));
    st.state = *state;
    st.pid = j.value("pid", 0L);
    st.host = j.value("host", "");
    st.start_unix = j.value("start_unix", 0.0);
    if (j.contains("end_unix") && j["end_unix"].is_number()) st.end_unix = j["end_unix"];
    st.total_steps = j.value("total_steps", 0L);
    st.message = j.value("message", "");
    st.config = j.value("config", "");
  } catch (const json::exception& e) {
    return bad(e.what());
  }
  if (st.state == run_state::running && st.host == host_name() && process_gone(st.pid)) {
    st.state = run_state::lost;
    st.message = fmt::format("process {} is gone without saying how the run ended", st.pid);
  }
  return st;
}

run_status_writer::run_status_writer(fs::path dir, std::string kind, std::string config_toml,
                                     long total_steps)
    : dir_(std::move(dir)) {
  st_.kind = std::move(kind);
  st_.pid = static_cast<long>(::getpid());
  st_.host = host_name();
  st_.start_unix = unix_now();
  st_.total_steps = total_steps;
  st_.config = std::move(config_toml);
  write();
}

run_status_writer::~run_status_writer() {
  if (!finished_) finish(run_state::failed, "ended without a result");
}

void run_status_writer::finish(run_state s, std::string message) {
  finished_ = true;
  st_.state = s;
  st_.message = std::move(message);
  st_.end_unix = unix_now();
  write();
}

void run_status_writer::write() {
  json j = {{"kind", st_.kind},
            {"state", to_string(st_.state)},
            {"pid", st_.pid},
            {"host", st_.host},
            {"start_unix", st_.start_unix},
            {"end_unix", st_.end_unix > 0 ? json(st_.end_unix) : json(nullptr)},
            {"total_steps", st_.total_steps},
            {"message", st_.message},
            {"config", st_.config}};
  const fs::path tmp = dir_ / "run.json.tmp", file = dir_ / "run.json";
  std::error_code ec;
  fs::create_directories(dir_, ec);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << j.dump(1) << "\n";
    out.flush();
    if (!out) {
      ++failures_;
      fmt::print(stderr, "zeroflow: run status: cannot write {}\n", tmp.string());
      return;
    }
  }
  fs::rename(tmp, file, ec);
  if (ec) {
    ++failures_;
    fmt::print(stderr, "zeroflow: run status: cannot rename {} to {}: {}\n", tmp.string(),
               file.string(), ec.message());
  }
}

}  // namespace zf::monitor
