// TLS between launcher and node agents (actors/cluster_tls): an agent with TLS answers only a
// client that speaks TLS with a certificate its CA signed, and trusts only agents its own CA
// signed; plain TCP and strangers get no agent; one failed connection leaves the others up.
// Certificates are made at test time with the `openssl` command-line tool; agent and client are
// two actor systems, as on two hosts.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "actors/cluster_tls.hpp"
#include "actors/node_agent.hpp"
#include "test_util.hpp"

using namespace zf::actors;
using namespace std::chrono_literals;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

const std::string token = "0123456789abcdef-tls-token";
using clock_type = std::chrono::steady_clock;

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Two CAs; agent and launcher certificates signed by the first, a stranger's by the second.
// Every leaf may serve as TLS server and client (extendedKeyUsage serverAuth,clientAuth).
struct test_pki {
  temp_dir dir{"cluster_tls"};
  std::string ca1, ca2, ca1_key;
  cluster_tls agent, launcher, stranger, stranger_trusting_ca1;

  test_pki() {
    REQUIRE_MESSAGE(std::system("openssl version >/dev/null 2>&1") == 0,
                    "the `openssl` command-line tool is needed to make the test's certificates "
                    "(Debian: apt-get install openssl)");
    const auto d = dir.path.string();
    std::ofstream(dir / "leaf.ext") << "basicConstraints=CA:FALSE\n"
                                       "keyUsage=digitalSignature,keyEncipherment\n"
                                       "extendedKeyUsage=serverAuth,clientAuth\n";
    std::ofstream(dir / "make.sh")
        << "set -e\ncd '" << d << "'\n"
        << "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
           "ca() { openssl req -x509 $ec -keyout $1.key -out $1.pem -days 2 -subj /CN=$1; }\n"
           "leaf() {\n"
           "  openssl req $ec -keyout $1.key -out $1.csr -subj /CN=$1\n"
           "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -set_serial $3 -days 2 \\\n"
           "    -extfile leaf.ext -out $1.pem\n"
           "  chmod 600 $1.key\n"
           "}\n"
           "ca ca1; ca ca2\n"
           "leaf agent ca1 1; leaf launcher ca1 2; leaf stranger ca2 3\n";
    const int rc = std::system(fmt::format("sh '{0}/make.sh' >'{0}/make.log' 2>&1", d).c_str());
    REQUIRE_MESSAGE(rc == 0, "openssl failed to make the certificates:\n"
                                 << slurp(dir / "make.log"));
    ca1 = (dir / "ca1.pem").string();
    ca2 = (dir / "ca2.pem").string();
    ca1_key = (dir / "ca1.key").string();
    auto leaf = [&](const std::string& name, const std::string& ca) {
      return cluster_tls{(dir / (name + ".pem")).string(), (dir / (name + ".key")).string(), ca};
    };
    agent = leaf("agent", ca1);
    launcher = leaf("launcher", ca1);
    stranger = leaf("stranger", ca2);
    stranger_trusting_ca1 = leaf("stranger", ca1);  // trusts the agent; the agent not it
  }
};

// One actor system set up as the CLI does: configure_cluster, then use_cluster_tls.
struct cluster_system {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  explicit cluster_system(const cluster_tls& tls) {
    configure_cluster(cfg);
    use_cluster_tls(cfg, tls);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

// An agent in an actor system of its own, its log kept.
struct tls_agent {
  cluster_system s;
  std::mutex mu;
  std::string log;
  std::unique_ptr<node_agent> agent;
  explicit tls_agent(const cluster_tls& tls, const std::string& host = "127.0.0.1",
                     const std::string& executable = "")
      : s(tls) {
    node_agent_options o;
    o.host = host;
    o.token = token;
    o.tls = tls;
    o.executable = executable;
    o.log = [this](const std::string& l) {
      std::lock_guard<std::mutex> g(mu);
      log += l + "\n";
    };
    agent = std::make_unique<node_agent>(*s.sys, o);
  }
  ~tls_agent() { agent.reset(); }
  uint16_t port() const { return static_cast<uint16_t>(agent->port()); }
  std::string logged() {
    std::lock_guard<std::mutex> g(mu);
    return log;
  }
};

// The hello reply's pid, or the error's text.
std::string hello(caf::actor_system& sys, const node_agent_actor& a, const std::string& tok) {
  caf::scoped_actor self{sys};
  std::string out;
  self->request(a, 3s, agent_hello_atom::value, tok)
      .receive([&](node_info& i) { out = fmt::format("pid {}", i.pid); },
               [&](caf::error& e) { out = sys.render(e); });
  return out;
}

// connect_agent's outcome ("" = connected) and how long it took.
struct attempt {
  std::string error;
  double seconds = 0;
};
attempt try_connect(const cluster_tls& client_tls, uint16_t port,
                    std::chrono::milliseconds timeout) {
  cluster_system client(client_tls);
  const auto t0 = clock_type::now();
  auto h = connect_agent(*client.sys, client_tls, "127.0.0.1", port, timeout);
  attempt a;
  a.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (!h)
    a.error = client.sys->render(h.error());
  else
    a.error = hello(*client.sys, *h, token).starts_with("pid ") ? "" : "hello failed";
  return a;
}

const test_pki& pki() {
  static test_pki p;
  return p;
}

}  // namespace

TEST_CASE("cluster tls: without CAF's OpenSSL module the flags are refused by name") {
  if (cluster_tls_available()) return;  // the TSan build's CAF has no OpenSSL
  const auto e = error_of([] { load_cluster_tls("a.pem", "a.key", "ca.pem"); });
  CHECK(contains(e, "built without CAF's OpenSSL module"));
  CHECK(contains(e, "--tls-cert"));
  CHECK(load_cluster_tls("", "", "").enabled() == false);
}

TEST_CASE("cluster tls: an agent with TLS answers a launcher its CA signed, token checked on top") {
  if (!cluster_tls_available()) return;
  const auto& p = pki();
  temp_dir d("tls-run");
  const auto fake = d / "fake_zeroflow";
  std::ofstream(fake) << "#!/bin/sh\necho \"rank $RANK says $*\"\n"
                         "if [ \"$2\" = sleep ]; then exec sleep 100; fi\n";
  ::chmod(fake.c_str(), 0755);
  tls_agent agent(p.agent, "127.0.0.1", fake.string());
  cluster_system client(p.launcher);
  auto h = connect_agent(*client.sys, p.launcher, "127.0.0.1", agent.port(), 5s);
  const std::string why = h ? "" : client.sys->render(h.error());  // logged even on success
  REQUIRE_MESSAGE(h, why);
  CHECK(hello(*client.sys, *h, token) == fmt::format("pid {}", ::getpid()));
  CHECK(contains(hello(*client.sys, *h, token + "x"), "wrong token"));
  CHECK(contains(agent.logged(), "refused a hello request"));
  // The agent's own messages (output, exit) come back over the same TLS connection.
  job_start js;
  js.job = "tls-a1";
  js.args = {"train", "--set", "x=1"};
  js.master_host = js.node_host = "127.0.0.1";
  js.master_port = 12345;
  js.job_secret = "s3cret";
  caf::scoped_actor self{*client.sys};
  std::string out;
  int code = -1;
  self->request(*h, 5s, agent_start_atom::value, token, js)
      .receive([](std::vector<int>&) {}, [&](caf::error& e) { FAIL(client.sys->render(e)); });
  while (code < 0) {
    self->receive(
        [&](rank_output_atom, const std::string&, int, const std::string& text) { out += text; },
        [&](rank_exited_atom, const std::string&, int, int c, const std::string&) { code = c; },
        [&](agent_beat_atom, const std::string&, int) {},
        caf::after(5s) >> [&] { FAIL("no exit within 5 s"); });
  }
  CHECK(out == "rank 0 says train --set x=1\n");
  CHECK(code == 0);
  // A stop's reply comes back promptly too (the launcher waits on it before restarting).
  js.job = "tls-a2";
  js.args = {"train", "sleep"};
  self->request(*h, 5s, agent_start_atom::value, token, js)
      .receive([](std::vector<int>&) {}, [&](caf::error& e) { FAIL(client.sys->render(e)); });
  const auto t0 = clock_type::now();
  bool stopped = false;
  self->request(*h, 10s, agent_stop_atom::value, token, js.job, 1000)
      .receive([&](bool b) { stopped = b; },
               [&](caf::error& e) { FAIL_CHECK(client.sys->render(e)); });
  CHECK(stopped);
  CHECK(std::chrono::duration<double>(clock_type::now() - t0).count() < 3);
}

TEST_CASE("cluster tls: plain TCP gets no TLS agent and TLS gets no plain agent") {
  if (!cluster_tls_available()) return;
  const auto& p = pki();
  tls_agent tls(p.agent);
  // A plain client waits for the agent's BASP greeting; the agent waits for a TLS hello.
  const attempt plain = try_connect({}, tls.port(), 2s);
  CHECK(!plain.error.empty());
  CHECK(plain.seconds < 4);
  MESSAGE("plain client to TLS agent: " << plain.error);
  // The stuck plain connection does not stop the agent from serving TLS clients.
  CHECK(try_connect(p.launcher, tls.port(), 5s).error == "");
  tls_agent plain_agent(cluster_tls{});
  const attempt to_plain = try_connect(p.launcher, plain_agent.port(), 5s);
  CHECK(!to_plain.error.empty());
  CHECK(to_plain.seconds < 4);
  MESSAGE("TLS client to plain agent: " << to_plain.error);
  CHECK(try_connect({}, plain_agent.port(), 5s).error == "");  // plain still works plainly
}

TEST_CASE("cluster tls: a certificate from another CA is refused both ways") {
  if (!cluster_tls_available()) return;
  const auto& p = pki();
  tls_agent agent(p.agent);
  // The stranger trusts only its own CA: it refuses the agent's certificate.
  const attempt distrusting = try_connect(p.stranger, agent.port(), 5s);
  CHECK(!distrusting.error.empty());
  CHECK(distrusting.seconds < 4);
  // The stranger trusts the agent's CA, but the agent does not trust the stranger's.
  const attempt distrusted = try_connect(p.stranger_trusting_ca1, agent.port(), 5s);
  CHECK(!distrusted.error.empty());
  CHECK(distrusted.seconds < 4);
  MESSAGE("stranger: " << distrusting.error << " / " << distrusted.error);
  CHECK(try_connect(p.launcher, agent.port(), 5s).error == "");  // the agent is still fine
}

// CAF 0.17's OpenSSL module never empties OpenSSL's per-thread error queue, so one failed
// connection used to make the next "would block" on any other connection of the same network
// thread look fatal (cluster_tls.cpp clears it before every TLS read and write).
TEST_CASE("cluster tls: a failed handshake or a dead peer leaves other connections alone") {
  if (!cluster_tls_available()) return;
  const auto& p = pki();
  tls_agent a(p.agent), c(p.agent);
  auto b = std::make_unique<tls_agent>(p.agent);
  cluster_system launcher(p.launcher);
  auto ha = connect_agent(*launcher.sys, p.launcher, "127.0.0.1", a.port(), 5s);
  auto hb = connect_agent(*launcher.sys, p.launcher, "127.0.0.1", b->port(), 5s);
  auto hc = connect_agent(*launcher.sys, p.launcher, "127.0.0.1", c.port(), 5s);
  REQUIRE((ha && hb && hc));
  // A stranger fails its handshake with agent a: a's connection to the launcher stays up.
  CHECK(!try_connect(p.stranger_trusting_ca1, a.port(), 5s).error.empty());
  for (int i = 0; i < 3; ++i) CHECK(hello(*launcher.sys, *ha, token).starts_with("pid "));
  // Agent b goes away without a TLS goodbye, as when killed: the launcher's connection to c
  // stays up.
  b.reset();
  std::this_thread::sleep_for(200ms);
  for (int i = 0; i < 3; ++i) CHECK(hello(*launcher.sys, *hc, token).starts_with("pid "));
}

TEST_CASE("cluster tls: the flags come all three or none, and bad files are named") {
  if (!cluster_tls_available()) return;
  const auto& p = pki();
  CHECK(!load_cluster_tls("", "", "").enabled());
  const auto ok = load_cluster_tls(p.agent.cert, p.agent.key, p.agent.ca);
  CHECK(ok.enabled());
  CHECK(ok.ca == p.ca1);
  const auto no_key = error_of([&] { load_cluster_tls(p.agent.cert, "", p.agent.ca); });
  CHECK(contains(no_key, "--tls-key missing"));
  const auto two = error_of([&] { load_cluster_tls("", p.agent.key, ""); });
  CHECK(contains(two, "--tls-cert and --tls-ca missing"));
  const auto absent = error_of([&] { load_cluster_tls("/nonexistent.pem", p.agent.key, p.ca1); });
  CHECK(contains(absent, "--tls-cert /nonexistent.pem: cannot open"));
  // A key others can read, a key of another certificate, a certificate of another CA.
  temp_dir d("tls-files");
  const auto open_key = (d / "open.key").string();
  std::filesystem::copy_file(p.agent.key, open_key);
  ::chmod(open_key.c_str(), 0644);
  CHECK(contains(error_of([&] { load_cluster_tls(p.agent.cert, open_key, p.ca1); }), "chmod 600"));
  CHECK(contains(error_of([&] { load_cluster_tls(p.agent.cert, p.launcher.key, p.ca1); }),
                 "is not the key of --tls-cert"));
  CHECK(contains(error_of([&] { load_cluster_tls(p.stranger.cert, p.stranger.key, p.ca1); }),
                 "does not verify against --tls-ca"));
  CHECK(contains(error_of([&] { load_cluster_tls(p.agent.cert, p.agent.key, p.ca1_key); }),
                 "--tls-ca"));
}

TEST_CASE("cluster tls: an agent off loopback without TLS warns that the token is in clear") {
  const std::string warning = "without TLS: the token";
  CHECK(!contains(tls_agent(cluster_tls{}).logged(), warning));  // loopback
  CHECK(contains(tls_agent(cluster_tls{}, "0.0.0.0").logged(), warning));
  if (cluster_tls_available())
    CHECK(!contains(tls_agent(pki().agent, "0.0.0.0").logged(), warning));
}
