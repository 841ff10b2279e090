#pragma once
// `zeroflow node`: one agent per host. It publishes a node_agent_actor (actors/cluster_protocol)
// on its listen address, and for a launcher that presents the token it starts the local ranks of
// a job (runtime/cluster/rank_processes), streams their output and exits back, sends a heartbeat
// every second while they run, and stops them (whole process groups) when asked or when the
// launcher goes away. It refuses a wrong token, a subcommand other than train, and
// arguments with shell metacharacters, and says so on its log. With TLS (actors/cluster_tls) it
// accepts only launchers whose certificate its CA signed; without, on an address other than
// loopback, it warns that the token travels in clear text.
#include <caf/all.hpp>
#include <functional>
#include <memory>
#include <string>

#include "actors/cluster_tls.hpp"

namespace zf::actors {

struct node_agent_options {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 0;                    // 0 = any free one (port() says which)
  std::string token;               // what every request must present
  std::string executable;          // what ranks run; "" = this binary
  cluster_tls tls;                 // TLS (sys set up by use_cluster_tls); none = plain TCP
  // Where the agent says what it does and refuses (default: stderr, one line each).
  std::function<void(const std::string&)> log;
};

class node_agent {
 public:
  // Publishes the agent on o.host:o.port in `sys` (which needs configure_cluster's set-up).
  // zf::error when the address cannot be bound or the token is empty.
  node_agent(caf::actor_system& sys, node_agent_options o);
  ~node_agent();  // stops every rank it runs
  node_agent(const node_agent&) = delete;
  node_agent& operator=(const node_agent&) = delete;

  int port() const { return port_; }

 private:
  caf::actor_system& sys_;
  caf::actor actor_;
  int port_ = 0;
};

}  // namespace zf::actors
