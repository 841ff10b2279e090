// The rendezvous (actors/rendezvous): rank 0's key-value store listens on MASTER_ADDR's
// interface only, and answers only requests carrying the job's secret (issue 9: it bound every
// interface and let anyone who reached the port join the job or read its rank table).
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/io/all.hpp>
#include <fstream>
#include <string>

#include "actors/rendezvous.hpp"
#include "runtime/core/error.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// The local address a listening TCP socket on port has, from /proc/net/tcp ("0100007F" is
// 127.0.0.1, "00000000" every interface); "" if none listens there.
std::string listen_address(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port);
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string slot, local, remote, state;
    ls >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() > 5 && local.substr(local.size() - 5) == want)
      return local.substr(0, local.size() - 5);
  }
  return {};
}

struct node {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  node() {
    cfg.load<caf::io::middleman>();
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

zf::process_env env(int rank, int port, std::string secret) {
  zf::process_env e;
  e.present = true;
  e.rank = rank;
  e.world = 2;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  e.job_secret = std::move(secret);
  return e;
}

}  // namespace

TEST_CASE("rendezvous: loopback only, and the job secret is required to set or read") {
  node n0, n1;
  const int port = free_port();
  auto master =
      zf::actors::open_rendezvous(*n0.sys, env(0, port, "s3cret-job"), std::chrono::seconds(5));
  CHECK(listen_address(port) == "0100007F");  // 127.0.0.1, not 0.0.0.0
  master->set("rank/0", {'a'});

  auto good =
      zf::actors::open_rendezvous(*n1.sys, env(1, port, "s3cret-job"), std::chrono::seconds(5));
  CHECK(good->get("rank/0", std::chrono::milliseconds(2000)) == std::vector<char>{'a'});
  good->set("rank/1", {'b'});
  CHECK(master->get("rank/1", std::chrono::milliseconds(2000)) == std::vector<char>{'b'});

  node n2;
  auto stranger =
      zf::actors::open_rendezvous(*n2.sys, env(1, port, "guess"), std::chrono::seconds(5));
  CHECK(contains(error_of([&] { stranger->get("rank/0", std::chrono::milliseconds(2000)); }),
                 "ZF_JOB_SECRET is not the job's"));
  CHECK(contains(error_of([&] { stranger->set("rank/0", {'x'}); }),
                 "ZF_JOB_SECRET is not the job's"));
  CHECK(master->get("rank/0", std::chrono::milliseconds(2000)) == std::vector<char>{'a'});  // kept
}
