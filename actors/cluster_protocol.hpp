#pragma once
// The cluster area's control plane: the messages and typed-actor interfaces between the
// processes of one launch. Every type here crosses processes, so each is a plain serialisable
// value (no handles but the actors CAF itself sends).
//
// 1. The rank table (rendezvous): rank 0 hosts a key-value actor, every rank reaches it as a CAF
//    remote actor.
// 2. Node agents (`zeroflow node`, actors/node_agent) and the launcher that drives them
//    (`zeroflow launch --nodes`, actors/cluster_launcher):
//      launcher -> agent  hello     token -> node_info (who the agent is)
//                         port      token -> a free port on the agent's host (the rendezvous)
//                         start     token, job_start -> the ranks' pids once they run
//                         stop      token, job id, grace ms -> true once every rank is gone
//      agent -> launcher  output    job id, rank, whole lines
//                         exited    job id, rank, exit code, how ("exited with code 3")
//                         beat      agent's index in the job, every second while a job runs
//    Every request carries the token; a wrong one is refused (sec::invalid_argument) and logged,
//    and nothing is started or revealed. An agent only ever starts the zeroflow binary itself,
//    with an allowed subcommand and checked arguments (runtime/cluster/job_spec).
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <string>
#include <vector>

#include "runtime/cluster/job_spec.hpp"

namespace zf::actors {

using kv_set_atom = caf::atom_constant<caf::atom("zf_kvset")>;  // store a value, reply when kept
using kv_get_atom = caf::atom_constant<caf::atom("zf_kvget")>;  // reply once the key is set

// The rendezvous store: get waits (a response promise) until some rank sets the key. Every
// request carries the job's secret first (process_env::job_secret); a wrong one is refused
// with sec::invalid_argument, and nothing is stored or revealed.
using kv_actor = caf::typed_actor<
    caf::replies_to<kv_set_atom, std::string, std::string, std::vector<char>>::with<bool>,
    caf::replies_to<kv_get_atom, std::string, std::string>::with<std::vector<char>>>;

using agent_hello_atom = caf::atom_constant<caf::atom("zf_ahello")>;
using agent_port_atom = caf::atom_constant<caf::atom("zf_aport")>;
using agent_start_atom = caf::atom_constant<caf::atom("zf_astart")>;
using agent_stop_atom = caf::atom_constant<caf::atom("zf_astop")>;
using rank_output_atom = caf::atom_constant<caf::atom("zf_rout")>;
using rank_exited_atom = caf::atom_constant<caf::atom("zf_rexit")>;
using agent_beat_atom = caf::atom_constant<caf::atom("zf_abeat")>;
// The agent's own wake-up when a job's ranks are all gone (it carries nothing: a stranger who
// sends it only makes the agent look at its jobs).
using agent_done_atom = caf::atom_constant<caf::atom("zf_adone")>;

// What an agent says about itself.
struct node_info {
  std::string hostname;
  int pid = 0;
  int cpus = 0;
  std::string busy_with;  // the job it runs now, "" = idle
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("zf_node_info"), x.hostname, x.pid, x.cpus, x.busy_with);
}

// One node's share of an attempt (runtime/cluster/job_spec.hpp).
using job_start = cluster::node_share;

}  // namespace zf::actors

namespace zf::cluster {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_share& x) {
  return f(caf::meta::type_name("zf_job_start"), x.job, x.attempt, x.args, x.node, x.world,
           x.nproc_per_node, x.master_host, x.master_port, x.job_secret, x.node_host);
}
}  // namespace zf::cluster

namespace zf::actors {

using node_agent_actor = caf::typed_actor<
    caf::replies_to<agent_hello_atom, std::string>::with<node_info>,
    caf::replies_to<agent_port_atom, std::string>::with<int>,
    caf::replies_to<agent_start_atom, std::string, job_start>::with<std::vector<int>>,
    caf::replies_to<agent_stop_atom, std::string, std::string, int>::with<bool>,
    caf::reacts_to<agent_done_atom>>;

// Both ends' actor system: the middleman, the types above announced, few scheduler threads
// (agents and launchers do little but pass messages).
inline void configure_cluster(caf::actor_system_config& c) {
  c.load<caf::io::middleman>();
  c.set("scheduler.max-threads", 2);
  c.set("logger.verbosity", caf::atom("quiet"));
  c.add_message_type<node_info>("zf_node_info");
  c.add_message_type<job_start>("zf_job_start");
  c.add_message_type<std::vector<int>>("zf_int_vector");
}

}  // namespace zf::actors
