#include "actors/node_agent.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <map>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "runtime/cluster/job_spec.hpp"
#include "runtime/cluster/rank_processes.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/process.hpp"

namespace zf::actors {
namespace {

using namespace std::chrono_literals;

// One job's ranks on this node, driven by a thread of its own (rank_processes::poll blocks):
// it forwards output and exits to the launcher in order and beats once a second.
struct job_runner {
  std::string job;
  int node = 0;
  caf::actor launcher;
  std::unique_ptr<cluster::rank_processes> ranks;
  std::thread thread;
  std::atomic<bool> done{false};
  std::vector<caf::typed_response_promise<bool>> stop_waiters;
};

void drive(job_runner& r, caf::actor agent) {
  auto last_beat = std::chrono::steady_clock::now() - 1s;
  while (!r.done) {
    auto events = r.ranks->poll(200ms);
    // Free before the last exit is told: a launcher that starts its next job as soon as it
    // hears of this one's end must not find the agent still busy with it.
    if (r.ranks->all_exited()) r.done = true;
    for (auto& e : events) {
      if (e.what == cluster::rank_event::kind::output)
        caf::anon_send(r.launcher, rank_output_atom::value, r.job, e.rank, std::move(e.text));
      else
        caf::anon_send(r.launcher, rank_exited_atom::value, r.job, e.rank, e.exit_code, e.text);
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_beat >= 1s) {
      caf::anon_send(r.launcher, agent_beat_atom::value, r.job, r.node);
      last_beat = now;
    }
  }
  caf::anon_send(agent, agent_done_atom::value);
}

struct agent_state {
  node_agent_options opt;
  std::map<std::string, std::shared_ptr<job_runner>> jobs;
  ~agent_state() {  // the agent ends: nothing it started may outlive it
    for (auto& [id, r] : jobs) r->ranks->request_stop(0ms);
    for (auto& [id, r] : jobs)
      if (r->thread.joinable()) r->thread.join();
  }
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

// 127.0.0.0/8, ::1 and localhost: reachable from this host only.
bool is_loopback(const std::string& host) {
  return host.starts_with("127.") || host == "::1" || host == "localhost";
}

caf::error refusal(std::string why) {
  return caf::make_error(caf::sec::invalid_argument, std::move(why));
}

int free_port_on(const std::string& host) {
  // The rendezvous binds the master's address; a port free on loopback is free for it too on
  // one host, and on a real network interface the kernel's choice for any address is as good.
  (void)host;
  return free_loopback_port();
}

void reap_done(agent_self self) {
  auto& jobs = self->state.jobs;
  for (auto it = jobs.begin(); it != jobs.end();) {
    auto& r = *it->second;
    if (!r.done) {
      ++it;
      continue;
    }
    if (r.thread.joinable()) r.thread.join();
    // said before the stop is confirmed: whoever asked reads the log in that order
    self->state.opt.log(fmt::format("job {}: every rank has ended", it->first));
    for (auto& p : r.stop_waiters) p.deliver(true);
    it = jobs.erase(it);
  }
}

caf::result<std::vector<int>> start_job(agent_self self, const job_start& js) {
  auto& st = self->state;
  reap_done(self);  // a job that has just ended (its done message not yet here) may share the id
  for (auto& [id, r] : st.jobs)
    if (!r->done) return refusal(fmt::format("this agent is busy with job {}", id));
  std::vector<cluster::rank_launch> launches;
  try {
    launches = cluster::launches_for(js);
  } catch (const std::exception& e) {
    st.opt.log(fmt::format("refused job {} from {}: {}", js.job, peer_of(self), e.what()));
    return refusal(e.what());
  }
  auto r = std::make_shared<job_runner>();
  r->job = js.job;
  r->node = js.node;
  r->launcher = caf::actor_cast<caf::actor>(self->current_sender());
  try {  // forked from this scheduler thread, which lives as long as the agent (PDEATHSIG)
    r->ranks = std::make_unique<cluster::rank_processes>(st.opt.executable, std::move(launches));
  } catch (const std::exception& e) {
    st.opt.log(fmt::format("job {}: cannot start its ranks: {}", js.job, e.what()));
    return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
  }
  std::vector<int> pids;
  for (pid_t p : r->ranks->pids()) pids.push_back(static_cast<int>(p));
  self->monitor(r->launcher);  // a launcher that goes away takes its ranks with it
  r->thread = std::thread(drive, std::ref(*r), caf::actor_cast<caf::actor>(self));
  st.opt.log(fmt::format("job {}: started ranks {}-{} of {} (pids {}): zeroflow {}", js.job,
                         js.node * js.nproc_per_node, (js.node + 1) * js.nproc_per_node - 1,
                         js.world, fmt::join(pids, ","), fmt::join(js.args, " ")));
  st.jobs[js.job] = std::move(r);
  return pids;
}

node_agent_actor::behavior_type agent_behavior(agent_self self, node_agent_options opt) {
  self->state.opt = std::move(opt);
  self->set_down_handler([self](caf::down_msg& m) {
    for (auto& [id, r] : self->state.jobs)
      if (!r->done && r->launcher.address() == m.source) {
        self->state.opt.log(fmt::format("job {}: its launcher went away; stopping its ranks", id));
        r->ranks->request_stop(5s);
      }
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
        for (auto& [id, r] : self->state.jobs)
          if (!r->done) info.busy_with = id;
        return info;
      },
      [self](agent_port_atom, const std::string& token) -> caf::result<int> {
        if (!admitted(self, token, "port")) return refusal("wrong token");
        try {
          return free_port_on(self->state.opt.host);
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
        auto it = self->state.jobs.find(job);
        if (it == self->state.jobs.end() || it->second->done) return true;
        self->state.opt.log(fmt::format("job {}: stopping its ranks (asked by the launcher)", job));
        it->second->ranks->request_stop(std::chrono::milliseconds(std::max(0, grace_ms)));
        auto p = self->make_response_promise<bool>();
        it->second->stop_waiters.push_back(p);
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
  if (!tls.enabled() && !is_loopback(host))
    log(fmt::format(
        "warning: listening on {} without TLS: the token and every job's arguments travel in "
        "clear text (give --tls-cert, --tls-key and --tls-ca)",
        host));
}

node_agent::~node_agent() {
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

}  // namespace zf::actors
