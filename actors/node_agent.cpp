#include "actors/node_agent.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "runtime/cluster/agent_jobs.hpp"
#include "runtime/cluster/job_spec.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/process.hpp"

namespace zf::actors {
namespace {

// The jobs (runtime/cluster/agent_jobs, logging to opt.log) and, per job, the launcher its ranks
// report to (and whose going away stops them). Destroyed as the agent ends: agent_jobs stops
// every rank then.
struct agent_state {
  node_agent_options opt;
  std::map<std::string, caf::actor> launchers;  // job id -> launcher, until the job is reaped
  cluster::agent_jobs jobs{[this](const std::string& line) { opt.log(line); }};
};
using agent_self = node_agent_actor::stateful_pointer<agent_state>;

std::string peer_of(agent_self self) {
  const auto& s = self->current_sender();
  return s ? caf::to_string(s->node()) : std::string("an anonymous sender");
}

// The token check every request passes first; a refusal is logged with what was asked.
bool admitted(agent_self self, const std::string& token, const char* what) {
  if (cluster::secret_equal(token, self->state.opt.token)) return true;
  self->state.opt.log(fmt::format("refused a {} request from {}: {}", what, peer_of(self),
                                  token.empty() ? "no token" : "wrong token"));
  return false;
}

caf::error refusal(std::string why) {
  return caf::make_error(caf::sec::invalid_argument, std::move(why));
}

void reap_done(agent_self self) {
  self->state.jobs.reap([self](const std::string& job) { self->state.launchers.erase(job); });
}

// A job's events as messages: output, exits and beats to its launcher, its end to the agent.
cluster::job_sink sink_for(agent_self self, caf::actor to, const job_start& js) {
  auto agent = caf::actor_cast<caf::actor>(self);
  return {
      [to, job = js.job](cluster::rank_event e) {
        if (e.what == cluster::rank_event::kind::output)
          caf::anon_send(to, rank_output_atom::value, job, e.rank, std::move(e.text));
        else
          caf::anon_send(to, rank_exited_atom::value, job, e.rank, e.exit_code, e.text);
      },
      [to, job = js.job, node = js.node] { caf::anon_send(to, agent_beat_atom::value, job, node); },
      [agent] { caf::anon_send(agent, agent_done_atom::value); }};
}

caf::result<std::vector<int>> start_job(agent_self self, const job_start& js) {
  auto& st = self->state;
  reap_done(self);  // a job that has just ended (its done message not yet here) may share the id
  auto launcher = caf::actor_cast<caf::actor>(self->current_sender());
  // forked from this scheduler thread, which lives as long as the agent (PDEATHSIG)
  auto r = st.jobs.start(js, st.opt.executable, sink_for(self, launcher, js), peer_of(self));
  using kind = cluster::agent_jobs::start_result::kind;
  if (r.what == kind::failed) return caf::make_error(caf::sec::runtime_error, std::move(r.why));
  if (r.what != kind::started) return refusal(std::move(r.why));
  self->monitor(launcher);  // a launcher that goes away takes its ranks with it
  st.launchers[js.job] = launcher;
  return std::move(r.pids);
}

node_agent_actor::behavior_type agent_behavior(agent_self self, node_agent_options opt) {
  self->state.opt = std::move(opt);
  self->set_down_handler([self](caf::down_msg& m) {
    for (auto& [id, launcher] : self->state.launchers)
      if (launcher.address() == m.source)
        self->state.jobs.stop(id, std::chrono::seconds(5),
                              "its launcher went away; stopping its ranks");
  });
  return {
      [self](agent_hello_atom, const std::string& token) -> caf::result<node_info> {
        if (!admitted(self, token, "hello")) return refusal("wrong token");
        node_info info;
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        info.hostname = host;
        info.pid = static_cast<int>(::getpid());
        info.cpus = static_cast<int>(std::thread::hardware_concurrency());
        info.busy_with = self->state.jobs.busy_with();
        return info;
      },
      [self](agent_port_atom, const std::string& token) -> caf::result<int> {
        if (!admitted(self, token, "port")) return refusal("wrong token");
        try {
          // The rendezvous binds the master's address; a port free on loopback is free for it
          // too on one host, and on a real network interface the kernel's choice for any address
          // is as good.
          return free_loopback_port();
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
        }
      },
      [self](agent_start_atom, const std::string& token,
             const job_start& js) -> caf::result<std::vector<int>> {
        if (!admitted(self, token, "start")) return refusal("wrong token");
        return start_job(self, js);
      },
      [self](agent_stop_atom, const std::string& token, const std::string& job,
             int grace_ms) -> caf::result<bool> {
        if (!admitted(self, token, "stop")) return refusal("wrong token");
        if (!self->state.jobs.stop(job, std::chrono::milliseconds(std::max(0, grace_ms)),
                                   "stopping its ranks (asked by the launcher)"))
          return true;
        auto p = self->make_response_promise<bool>();
        self->state.jobs.when_ended(job, [p]() mutable { p.deliver(true); });
        return p;
      },
      [self](agent_done_atom) { reap_done(self); },
  };
}

}  // namespace

node_agent::node_agent(caf::actor_system& sys, node_agent_options o) : sys_(sys) {
  if (o.token.empty()) fail("node agent: a token is required");
  if (!o.log)
    o.log = [](const std::string& line) { std::cerr << "zeroflow node: " << line << "\n"; };
  const std::string host = o.host;
  const int want = o.port;
  const cluster_tls tls = o.tls;
  const auto log = o.log;
  auto typed = sys.spawn(agent_behavior, std::move(o));
  actor_ = caf::actor_cast<caf::actor>(typed);
  const char* bind_to = host == "0.0.0.0" ? nullptr : host.c_str();
  auto port = publish_agent(sys, tls, typed, static_cast<uint16_t>(want), bind_to);
  if (!port) {
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
    fail("node agent: cannot listen on {}:{}{}: {}", host, want, tls.enabled() ? " with TLS" : "",
         sys.render(port.error()));
  }
  port_ = *port;
  if (auto warning = cluster::listen_warning(host, tls.enabled()); !warning.empty()) log(warning);
}

node_agent::~node_agent() {
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

}  // namespace zf::actors
