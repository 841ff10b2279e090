#pragma once
// The launcher's first step (actors/cluster_launcher): every agent of the job connected (retried
// until connect_timeout: an agent may still be starting) and asked who it is with the token.
#include <vector>

#include "actors/cluster_launcher.hpp"
#include "actors/cluster_protocol.hpp"

namespace zf::actors {

// The agents of o.nodes in order; zf::error naming the first that cannot be reached, refuses the
// token, does not answer or is busy with another job (with a hint for a TLS mismatch).
std::vector<node_agent_actor> connect_agents(caf::actor_system& sys,
                                             const cluster_launch_options& o);

}  // namespace zf::actors
