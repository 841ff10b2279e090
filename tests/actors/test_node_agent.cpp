// The node agent (actors/node_agent) as a launcher sees it over the network: it answers only
// requests that carry its token, starts only the zeroflow binary with an allowed subcommand and
// clean arguments, streams its ranks' lines and exits back, stops them when asked, and listens on
// loopback unless told otherwise. Agent and client are two actor systems, as on two hosts.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <caf/io/all.hpp>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "actors/node_agent.hpp"
#include "test_util.hpp"

using namespace zf::actors;
using zf::testing::temp_dir;

namespace {

const std::string token = "0123456789abcdef-token";

struct agent_fixture {
  caf::actor_system_config agent_cfg, client_cfg;
  std::unique_ptr<caf::actor_system> agent_sys, client_sys;
  std::unique_ptr<node_agent> agent;
  std::mutex mu;
  std::vector<std::string> log;

  explicit agent_fixture(const std::string& executable = "", const std::string& host = "") {
    configure_cluster(agent_cfg);
    configure_cluster(client_cfg);
    agent_sys = std::make_unique<caf::actor_system>(agent_cfg);
    client_sys = std::make_unique<caf::actor_system>(client_cfg);
    node_agent_options o;
    if (!host.empty()) o.host = host;
    o.token = token;
    o.executable = executable;
    o.log = [this](const std::string& l) {
      std::lock_guard<std::mutex> g(mu);
      log.push_back(l);
    };
    agent = std::make_unique<node_agent>(*agent_sys, o);
  }
  ~agent_fixture() {
    agent.reset();
    client_sys.reset();
    agent_sys.reset();
  }
  node_agent_actor connect() {
    auto h = client_sys->middleman().remote_actor<node_agent_actor>(
        "127.0.0.1", static_cast<uint16_t>(agent->port()));
    REQUIRE(h);
    return *h;
  }
  std::string logged() {
    std::lock_guard<std::mutex> g(mu);
    std::string all;
    for (auto& l : log) all += l + "\n";
    return all;
  }
};

// The error a request gets ("" when it succeeded).
template <class Reply, class... Ts>
std::string refusal_of(caf::actor_system& sys, const node_agent_actor& a, Ts&&... xs) {
  caf::scoped_actor self{sys};
  std::string out;
  self->request(a, std::chrono::seconds(10), std::forward<Ts>(xs)...)
      .receive([](Reply&) {}, [&](caf::error& e) { out = sys.render(e); });
  return out;
}

job_start sample_job(std::vector<std::string> args) {
  job_start js;
  js.job = "j1-a1";
  js.args = std::move(args);
  js.world = 2;
  js.nproc_per_node = 2;
  js.master_host = "127.0.0.1";
  js.master_port = 12345;
  js.job_secret = "s3cret";
  js.node_host = "127.0.0.1";
  return js;
}

// A stand-in for the zeroflow binary: says what it was started with, then does what $1 says.
std::string fake_binary(const temp_dir& d) {
  const auto path = d.path / "fake_zeroflow";
  std::ofstream(path) << "#!/bin/sh\n"
                         "echo \"rank $RANK local $LOCAL_RANK of $WORLD_SIZE attempt $ZF_ATTEMPT "
                         "master $MASTER_ADDR:$MASTER_PORT iface $ZF_IFACE_ADDR args $*\"\n"
                         "if [ \"$2\" = sleep ]; then exec sleep 100; fi\n"
                         "exit $((3 + RANK))\n";
  ::chmod(path.c_str(), 0755);
  return path.string();
}

bool gone(int pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = s.rfind(')');
  return close != std::string::npos && s.size() > close + 2 && s[close + 2] == 'Z';
}

}  // namespace

TEST_CASE("node agent: a request with no token or a wrong one is refused and logged") {
  agent_fixture f;
  auto a = f.connect();
  CHECK(refusal_of<node_info>(*f.client_sys, a, agent_hello_atom::value, std::string()) != "");
  CHECK(refusal_of<node_info>(*f.client_sys, a, agent_hello_atom::value, token + "x") != "");
  CHECK(refusal_of<int>(*f.client_sys, a, agent_port_atom::value, std::string("nope")) != "");
  CHECK(refusal_of<std::vector<int>>(*f.client_sys, a, agent_start_atom::value, std::string("nope"),
                                     sample_job({"train"})) != "");
  CHECK(refusal_of<node_info>(*f.client_sys, a, agent_hello_atom::value, token) == "");
  const std::string log = f.logged();
  CHECK(zf::testing::contains(log, "refused a hello request from"));
  CHECK(zf::testing::contains(log, ": no token"));
  CHECK(zf::testing::contains(log, ": wrong token"));
  CHECK(zf::testing::contains(log, "refused a start request"));
  CHECK(!zf::testing::contains(log, "started ranks"));  // nothing was started
}

TEST_CASE("node agent: another subcommand or a shell metacharacter payload is refused and logged") {
  temp_dir d("agent-refuse");
  agent_fixture f(fake_binary(d));
  auto a = f.connect();
  const std::string serve = refusal_of<std::vector<int>>(
      *f.client_sys, a, agent_start_atom::value, token, sample_job({"serve", "--port", "80"}));
  CHECK(zf::testing::contains(serve, "serve"));
  const std::string inject =
      refusal_of<std::vector<int>>(*f.client_sys, a, agent_start_atom::value, token,
                                   sample_job({"train", "--out", "x; rm -rf /"}));
  CHECK(zf::testing::contains(inject, "metacharacter"));
  CHECK(refusal_of<std::vector<int>>(*f.client_sys, a, agent_start_atom::value, token,
                                     sample_job({"train", "$(reboot)"})) != "");
  CHECK(refusal_of<std::vector<int>>(*f.client_sys, a, agent_start_atom::value, token,
                                     sample_job({})) != "");
  const std::string log = f.logged();
  CHECK(zf::testing::contains(log, "refused job j1-a1"));
  CHECK(!zf::testing::contains(log, "started ranks"));
}

TEST_CASE("node agent: listens on loopback unless told otherwise") {
  CHECK(node_agent_options{}.host == "127.0.0.1");
  agent_fixture f;
  // /proc/net/tcp: "sl local_address rem_address st ...", local as HEXADDR:HEXPORT, 0A = LISTEN
  std::ifstream in("/proc/net/tcp");
  std::string line, addr;
  const std::string port = fmt::format(":{:04X}", f.agent->port());
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string slot, local, remote, state;
    ss >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() == 13 && local.substr(8) == port) addr = local.substr(0, 8);
  }
  CHECK(addr == "0100007F");  // 127.0.0.1, not 00000000 (every interface)
}

TEST_CASE(
    "node agent: starts the ranks, streams their lines and exits, and stops them on request") {
  temp_dir d("agent-run");
  agent_fixture f(fake_binary(d));
  auto a = f.connect();
  caf::scoped_actor self{*f.client_sys};
  std::vector<int> pids;
  self->request(a, std::chrono::seconds(10), agent_start_atom::value, token,
                sample_job({"train", "--set", "x=1"}))
      .receive([&](std::vector<int>& p) { pids = p; },
               [&](caf::error& e) { FAIL(f.client_sys->render(e)); });
  REQUIRE(pids.size() == 2);
  std::map<int, std::string> out;
  std::map<int, int> code;
  while (code.size() < 2) {
    self->receive(
        [&](rank_output_atom, const std::string& job, int rank, const std::string& text) {
          CHECK(job == "j1-a1");
          out[rank] += text;
        },
        [&](rank_exited_atom, const std::string&, int rank, int c, const std::string&) {
          code[rank] = c;
        },
        [&](agent_beat_atom, const std::string&, int) {},
        caf::after(std::chrono::seconds(10)) >> [&] { FAIL("no exit within 10 s"); });
  }
  CHECK(out[0] ==
        "rank 0 local 0 of 2 attempt 1 master 127.0.0.1:12345 iface 127.0.0.1 args "
        "train --set x=1\n");
  CHECK(out[1] ==
        "rank 1 local 1 of 2 attempt 1 master 127.0.0.1:12345 iface 127.0.0.1 args "
        "train --set x=1\n");
  CHECK(code[0] == 3);
  CHECK(code[1] == 4);

  // A second job that sleeps until stopped: the stop's reply comes once both ranks are gone.
  auto js = sample_job({"train", "sleep"});
  js.job = "j2-a1";
  self->request(a, std::chrono::seconds(10), agent_start_atom::value, token, js)
      .receive([&](std::vector<int>& p) { pids = p; },
               [&](caf::error& e) { FAIL(f.client_sys->render(e)); });
  REQUIRE(pids.size() == 2);
  bool stopped = false;
  self->request(a, std::chrono::seconds(20), agent_stop_atom::value, token, std::string("j2-a1"),
                500)
      .receive([&](bool ok) { stopped = ok; },
               [&](caf::error& e) { FAIL(f.client_sys->render(e)); });
  CHECK(stopped);
  for (int p : pids) CHECK(gone(p));
  CHECK(zf::testing::contains(f.logged(), "job j2-a1: every rank has ended"));
}

// The agent counts a job as ended before it tells the launcher of its last rank's exit, so a
// launcher that starts the next attempt (same job id or not) the moment it hears is never told
// "busy" (this raced once in CI).
TEST_CASE("node agent: the next job starts the moment the last rank's exit is heard") {
  temp_dir d("agent-next");
  agent_fixture f(fake_binary(d));
  auto a = f.connect();
  caf::scoped_actor self{*f.client_sys};
  for (int i = 0; i < 12; ++i) {
    auto js = sample_job({"train"});
    js.job = i % 2 ? "j1-a1" : fmt::format("j{}-a1", i);  // every other one reuses an id
    std::string err;
    self->request(a, std::chrono::seconds(10), agent_start_atom::value, token, js)
        .receive([](std::vector<int>&) {}, [&](caf::error& e) { err = f.client_sys->render(e); });
    REQUIRE_MESSAGE(err.empty(), "job " << i << ": " << err);
    int exits = 0;
    while (exits < 2)
      self->receive(
          [](rank_output_atom, const std::string&, int, const std::string&) {},
          [&](rank_exited_atom, const std::string&, int, int, const std::string&) { ++exits; },
          [](agent_beat_atom, const std::string&, int) {},
          caf::after(std::chrono::seconds(10)) >> [&] { FAIL("no exit within 10 s"); });
  }
  CHECK(zf::testing::contains(f.logged(), "job j10-a1: started ranks"));
}
