#include "actors/launch_connect.hpp"

#include <chrono>
#include <thread>

#include "actors/cluster_tls.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

std::vector<node_agent_actor> connect_agents(caf::actor_system& sys,
                                             const cluster_launch_options& o) {
  std::vector<node_agent_actor> agents;
  caf::scoped_actor self{sys};
  for (const auto& n : o.nodes) {
    const auto deadline = clock::now() + o.connect_timeout;
    caf::expected<node_agent_actor> h = caf::sec::cannot_connect_to_node;
    for (;;) {  // an agent may still be starting: try again until the deadline
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      h = connect_agent(sys, o.tls, n.host, static_cast<uint16_t>(n.port), std::max(left, 500ms));
      if (h || clock::now() > deadline) break;
      std::this_thread::sleep_for(200ms);
    }
    if (!h) {
      const auto& e = h.error();
      const bool garbled = e == caf::sec::disconnect_during_handshake ||
                           e == caf::sec::request_timeout;  // e.g. plain TCP to a TLS agent
      fail("launch: cannot reach the agent at {}: {}{}", n.text(), sys.render(e),
           o.tls.enabled() ? " (with TLS the agent must run with --tls-cert, --tls-key and "
                             "--tls-ca too, its certificate signed by our --tls-ca and ours by its)"
           : garbled       ? " (an agent started with --tls-* flags needs them here too)"
                           : "");
    }
    self->request(*h, 10s, agent_hello_atom::value, o.token)
        .receive(
            [&](node_info& info) {
              if (!info.busy_with.empty())
                fail("launch: the agent at {} ({}) is busy with job {}", n.text(), info.hostname,
                     info.busy_with);
            },
            [&](caf::error& e) {
              if (e == caf::sec::invalid_argument)
                fail(
                    "launch: the agent at {} refused the token (--token must be the file the "
                    "agent was started with)",
                    n.text());
              fail("launch: the agent at {} did not answer: {}", n.text(), sys.render(e));
            });
    agents.push_back(*h);
  }
  return agents;
}

}  // namespace zf::actors
