#include "actors/cluster_launcher.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "actors/launch_connect.hpp"
#include "runtime/cluster/launch_tracker.hpp"
#include "runtime/cluster/rank_logs.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/process.hpp"

namespace zf::actors {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
using tick_atom = caf::atom_constant<caf::atom("zf_ltick")>;

struct launcher_state {
  cluster_launch_options opt;
  std::vector<node_agent_actor> agents;
  std::unique_ptr<cluster::launch_tracker> t;
  std::unique_ptr<cluster::rank_logs> logs;
  std::shared_ptr<std::promise<int>> result;
};
using launcher_self = caf::stateful_actor<launcher_state>*;
using phase = cluster::launch_tracker::phase;

void finish(launcher_self self, int code) {
  auto& st = self->state;
  if (st.t->ph() == phase::done) return;
  st.t->finish();
  st.result->set_value(code);
  self->quit();
}

void start_attempt(launcher_self self);

void after_stop(launcher_self self) {
  const auto o = self->state.t->after_stop();
  if (!o.line.empty()) self->state.opt.say(o.line);
  if (o.restart) return start_attempt(self);
  finish(self, o.code);
}

void node_lost(launcher_self self, int node, const std::string& cause);

// Every rank of the attempt is asked to stop (whole process groups, SIGKILL after the grace
// period); a node that does not confirm is counted lost.
void stop_all(launcher_self self) {
  auto& st = self->state;
  const std::string job = st.t->job();
  const std::vector<int> ask = st.t->begin_stop();
  for (int n : ask) {
    const auto wait = st.opt.stop_grace + 10s;
    self->request(st.agents[static_cast<std::size_t>(n)], wait, agent_stop_atom::value,
                  st.opt.token, job, static_cast<int>(st.opt.stop_grace.count()))
        .then(
            [self, job](bool) {
              if (self->state.t->current(job) && self->state.t->stop_replied()) after_stop(self);
            },
            [self, job, n](caf::error& e) {
              if (!self->state.t->current(job)) return;
              node_lost(self, n, "did not confirm the stop: " + self->system().render(e));
              if (self->state.t->stop_replied()) after_stop(self);
            });
  }
  if (ask.empty()) after_stop(self);
}

void on_verdict(launcher_self self, cluster::job_control::verdict v) {
  auto& st = self->state;
  using verdict = cluster::job_control::verdict;
  if (v == verdict::succeeded) {
    st.opt.say(fmt::format("zeroflow launch: every rank finished (attempt {})",
                           st.t->ctrl().current().number));
    return finish(self, 0);
  }
  if (v != verdict::stop_all) return;
  st.opt.say(fmt::format("zeroflow launch: {}; stopping every rank", st.t->ctrl().failure()));
  stop_all(self);
}

void node_lost(launcher_self self, int node, const std::string& cause) {
  on_verdict(self, self->state.t->ctrl().node_lost(node, cause));
}

void start_nodes(launcher_self self, int master_port) {
  auto& st = self->state;
  const auto& att = st.t->ctrl().current();
  const std::string secret = random_secret();
  const std::string job = st.t->job();
  for (std::size_t i = 0; i < att.nodes.size(); ++i) {
    const int n = att.nodes[i];
    const job_start js = st.t->ctrl().share(i, job, st.opt.args, master_port, secret);
    self->request(st.agents[static_cast<std::size_t>(n)], 30s, agent_start_atom::value,
                  st.opt.token, js)
        .then(
            [self, job, n](std::vector<int>& pids) {
              auto& s = self->state;
              if (!s.t->current(job) || s.t->ph() != phase::starting) return;
              const auto note = s.t->started(n, pids);
              s.opt.say(note.line);
              for (const auto& [rank, header] : note.rank_headers) s.logs->note(rank, header);
            },
            [self, job, n](caf::error& e) {
              auto& s = self->state;
              if (!s.t->current(job) || s.t->ph() != phase::starting) return;
              if (e == caf::sec::invalid_argument) {  // refused: the same request would be again
                s.t->refused();
                s.opt.say(fmt::format("zeroflow launch: agent {} refused the job: {}",
                                      s.t->ctrl().node(n).text(), self->system().render(e)));
                return stop_all(self);
              }
              node_lost(self, n, "could not start its ranks: " + self->system().render(e));
            });
  }
}

void start_attempt(launcher_self self) {
  auto& st = self->state;
  st.opt.say(st.t->begin_attempt(st.opt.args, clock::now()));
  const int master = st.t->ctrl().current().nodes.front();
  const std::string job = st.t->job();
  self->request(st.agents[static_cast<std::size_t>(master)], 10s, agent_port_atom::value,
                st.opt.token)
      .then(
          [self, job](int port) {
            if (self->state.t->current(job)) start_nodes(self, port);
          },
          [self, job, master](caf::error& e) {
            if (!self->state.t->current(job)) return;
            node_lost(self, master, "gave no rendezvous port: " + self->system().render(e));
          });
}

// The periodic check: Ctrl-C, and nodes whose heartbeats stopped.
void on_tick(launcher_self self) {
  auto& s = self->state;
  if (s.t->ph() == phase::done) return;
  if (s.opt.interrupt && s.opt.interrupt->load() && s.t->interrupt()) {
    s.opt.say("zeroflow launch: interrupted; stopping every rank");
    if (s.t->ph() != phase::stopping) stop_all(self);
  }
  for (int n : s.t->overdue(clock::now(), s.opt.heartbeat_timeout))
    node_lost(self, n, cluster::launch_tracker::overdue_cause(s.opt.heartbeat_timeout));
  self->delayed_send(self, 250ms, tick_atom::value);
}

caf::behavior launcher_behavior(launcher_self self, cluster_launch_options opt,
                                std::vector<node_agent_actor> agents,
                                std::shared_ptr<std::promise<int>> result) {
  auto& st = self->state;
  st.opt = std::move(opt);
  st.logs = std::make_unique<cluster::rank_logs>(st.opt.log_dir, st.opt.print);
  st.agents = std::move(agents);
  st.result = std::move(result);
  st.t = std::make_unique<cluster::launch_tracker>(
      st.opt.nodes, st.opt.nproc_per_node, st.opt.max_restarts,
      st.opt.min_nodes > 0 ? st.opt.min_nodes : static_cast<int>(st.opt.nodes.size()),
      fmt::format("job{}", random_secret().substr(0, 8)));
  for (auto& a : st.agents) self->monitor(a);
  self->set_down_handler([self](caf::down_msg& m) {
    auto& s = self->state;
    for (std::size_t i = 0; i < s.agents.size(); ++i)
      if (s.agents[i].address() == m.source)
        node_lost(self, static_cast<int>(i),
                  "lost its connection: the agent was killed or its host went down");
  });
  start_attempt(self);
  self->send(self, tick_atom::value);
  return {
      [self](rank_output_atom, const std::string&, int rank, const std::string& text) {
        self->state.logs->output(rank, text);
      },
      [self](rank_exited_atom, const std::string& job, int rank, int code, const std::string& how) {
        auto& s = self->state;
        if (!s.t->current(job)) return;
        if (code != 0 && s.t->ph() == phase::stopping) return;  // stopped by us
        on_verdict(self, s.t->ctrl().rank_exited(rank, code, how));
      },
      [self](agent_beat_atom, const std::string& job, int node_in_job) {
        self->state.t->beat(job, node_in_job, clock::now());
      },
      [self](tick_atom) { on_tick(self); },
  };
}

}  // namespace

int run_cluster_launch(caf::actor_system& sys, cluster_launch_options o) {
  if (!o.print) o.print = [](const std::string& l) { std::cout << l << "\n" << std::flush; };
  if (!o.say) o.say = [](const std::string& l) { std::cerr << l << "\n"; };
  cluster::check_launch_args(o.args);  // the agents would refuse it: say so before connecting
  if (!o.log_dir.empty()) std::filesystem::create_directories(o.log_dir);
  auto agents = connect_agents(sys, o);
  auto result = std::make_shared<std::promise<int>>();
  auto done = result->get_future();
  sys.spawn(launcher_behavior, std::move(o), std::move(agents), result);
  return done.get();
}

}  // namespace zf::actors
