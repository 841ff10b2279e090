#include "actors/cluster_launcher.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "runtime/cluster/job_control.hpp"
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
  std::unique_ptr<cluster::job_control> ctrl;
  std::string run_name, job;
  enum class phase { starting, running, stopping, done } ph = phase::starting;
  std::vector<clock::time_point> last_beat;
  int pending = 0;       // start or stop replies the phase still waits for
  bool refused = false;  // an agent refused the request: no restart helps
  bool interrupted = false;
  std::unique_ptr<cluster::rank_logs> logs;
  std::shared_ptr<std::promise<int>> result;
};
using launcher_self = caf::stateful_actor<launcher_state>*;

void finish(launcher_self self, int code) {
  auto& st = self->state;
  if (st.ph == launcher_state::phase::done) return;
  st.ph = launcher_state::phase::done;
  st.result->set_value(code);
  self->quit();
}

void start_attempt(launcher_self self);

void after_stop(launcher_self self) {
  auto& st = self->state;
  if (st.interrupted) return finish(self, 130);
  if (st.refused) return finish(self, 2);
  if (st.ctrl->should_restart()) {
    st.opt.say(
        fmt::format("zeroflow launch: restart {} of {} on {} node(s), from the last "
                    "checkpoint",
                    st.ctrl->restarts_used() + 1, st.ctrl->max_restarts(), st.ctrl->alive_count()));
    return start_attempt(self);
  }
  const int code = st.ctrl->exit_code() ? st.ctrl->exit_code() : 1;
  const bool spent = st.ctrl->restarts_used() >= st.ctrl->max_restarts();
  st.opt.say(fmt::format(
      "zeroflow launch: the job failed ({}); {}; exit code {}", st.ctrl->failure(),
      spent
          ? fmt::format("{} of {} restarts used", st.ctrl->restarts_used(), st.ctrl->max_restarts())
          : fmt::format("only {} node(s) alive", st.ctrl->alive_count()),
      code));
  finish(self, code);
}

void node_lost(launcher_self self, int node, const std::string& cause);

// Every rank of the attempt is asked to stop (whole process groups, SIGKILL after the grace
// period); a node that does not confirm is counted lost.
void stop_all(launcher_self self) {
  auto& st = self->state;
  st.ph = launcher_state::phase::stopping;
  const std::string job = st.job;
  st.pending = 0;
  for (int n : st.ctrl->current().nodes) {
    if (!st.ctrl->alive(n)) continue;
    ++st.pending;
    const auto wait = st.opt.stop_grace + 10s;
    self->request(st.agents[static_cast<std::size_t>(n)], wait, agent_stop_atom::value,
                  st.opt.token, job, static_cast<int>(st.opt.stop_grace.count()))
        .then(
            [self, job](bool) {
              if (self->state.job == job && --self->state.pending == 0) after_stop(self);
            },
            [self, job, n](caf::error& e) {
              if (self->state.job != job) return;
              node_lost(self, n, "did not confirm the stop: " + self->system().render(e));
              if (--self->state.pending == 0) after_stop(self);
            });
  }
  if (st.pending == 0) after_stop(self);
}

void on_verdict(launcher_self self, cluster::job_control::verdict v) {
  auto& st = self->state;
  using verdict = cluster::job_control::verdict;
  if (v == verdict::succeeded) {
    st.opt.say(fmt::format("zeroflow launch: every rank finished (attempt {})",
                           st.ctrl->current().number));
    return finish(self, 0);
  }
  if (v != verdict::stop_all) return;
  st.opt.say(fmt::format("zeroflow launch: {}; stopping every rank", st.ctrl->failure()));
  stop_all(self);
}

void node_lost(launcher_self self, int node, const std::string& cause) {
  on_verdict(self, self->state.ctrl->node_lost(node, cause));
}

void start_nodes(launcher_self self, int master_port) {
  auto& st = self->state;
  const auto& att = st.ctrl->current();
  const std::string secret = random_secret();
  st.pending = static_cast<int>(att.nodes.size());
  const std::string job = st.job;
  for (std::size_t i = 0; i < att.nodes.size(); ++i) {
    const int n = att.nodes[i];
    const job_start js = st.ctrl->share(i, job, st.opt.args, master_port, secret);
    self->request(st.agents[static_cast<std::size_t>(n)], 30s, agent_start_atom::value,
                  st.opt.token, js)
        .then(
            [self, job, n](std::vector<int>& pids) {
              auto& s = self->state;
              if (s.job != job || s.ph != launcher_state::phase::starting) return;
              s.opt.say(fmt::format("zeroflow launch: {} on {}: pids {}", s.ctrl->ranks_of(n),
                                    s.ctrl->node(n).text(), fmt::join(pids, ",")));
              const auto& nodes = s.ctrl->current().nodes;
              const int first =
                  static_cast<int>(std::find(nodes.begin(), nodes.end(), n) - nodes.begin()) *
                  s.opt.nproc_per_node;
              for (std::size_t i = 0; i < pids.size(); ++i)
                s.logs->note(first + static_cast<int>(i),
                             fmt::format("--- zeroflow launch: attempt {}, rank {} (pid {}) on {} "
                                         "---",
                                         s.ctrl->current().number, first + static_cast<int>(i),
                                         pids[i], s.ctrl->node(n).text()));
              if (--s.pending == 0) s.ph = launcher_state::phase::running;
            },
            [self, job, n](caf::error& e) {
              auto& s = self->state;
              if (s.job != job || s.ph != launcher_state::phase::starting) return;
              if (e == caf::sec::invalid_argument) {  // refused: the same request would be again
                s.refused = true;
                s.opt.say(fmt::format("zeroflow launch: agent {} refused the job: {}",
                                      s.ctrl->node(n).text(), self->system().render(e)));
                return stop_all(self);
              }
              node_lost(self, n, "could not start its ranks: " + self->system().render(e));
            });
  }
}

void start_attempt(launcher_self self) {
  auto& st = self->state;
  const auto& att = st.ctrl->begin_attempt();
  st.job = fmt::format("{}-a{}", st.run_name, att.number);
  st.ph = launcher_state::phase::starting;
  st.last_beat.assign(st.agents.size(), clock::now());
  st.opt.say(fmt::format("zeroflow launch: attempt {}: {} rank(s) on {} node(s): zeroflow {}",
                         att.number, att.world, att.nodes.size(),
                         fmt::join(cluster::attempt_args(st.opt.args, att.number), " ")));
  const int master = att.nodes.front();
  const std::string job = st.job;
  self->request(st.agents[static_cast<std::size_t>(master)], 10s, agent_port_atom::value,
                st.opt.token)
      .then(
          [self, job](int port) {
            if (self->state.job == job) start_nodes(self, port);
          },
          [self, job, master](caf::error& e) {
            if (self->state.job != job) return;
            node_lost(self, master, "gave no rendezvous port: " + self->system().render(e));
          });
}

caf::behavior launcher_behavior(launcher_self self, cluster_launch_options opt,
                                std::vector<node_agent_actor> agents,
                                std::shared_ptr<std::promise<int>> result) {
  auto& st = self->state;
  st.opt = std::move(opt);
  st.logs = std::make_unique<cluster::rank_logs>(st.opt.log_dir, st.opt.print);
  st.agents = std::move(agents);
  st.result = std::move(result);
  st.ctrl = std::make_unique<cluster::job_control>(
      st.opt.nodes, st.opt.nproc_per_node, st.opt.max_restarts,
      st.opt.min_nodes > 0 ? st.opt.min_nodes : static_cast<int>(st.opt.nodes.size()));
  st.run_name = fmt::format("job{}", random_secret().substr(0, 8));
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
        if (job != s.job) return;
        if (code != 0 && s.ph == launcher_state::phase::stopping) return;  // stopped by us
        on_verdict(self, s.ctrl->rank_exited(rank, code, how));
      },
      [self](agent_beat_atom, const std::string& job, int node_in_job) {
        auto& s = self->state;
        const auto& nodes = s.ctrl->current().nodes;
        if (job != s.job || node_in_job < 0 || node_in_job >= static_cast<int>(nodes.size()))
          return;
        s.last_beat[static_cast<std::size_t>(nodes[static_cast<std::size_t>(node_in_job)])] =
            clock::now();
      },
      [self](tick_atom) {
        auto& s = self->state;
        if (s.ph == launcher_state::phase::done) return;
        if (s.opt.interrupt && s.opt.interrupt->load() && !s.interrupted) {
          s.interrupted = true;
          s.opt.say("zeroflow launch: interrupted; stopping every rank");
          if (s.ph != launcher_state::phase::stopping) stop_all(self);
        }
        if (s.ph == launcher_state::phase::running) {
          const auto now = clock::now();
          for (int n : s.ctrl->current().nodes)
            if (s.ctrl->alive(n) &&
                now - s.last_beat[static_cast<std::size_t>(n)] > s.opt.heartbeat_timeout)
              node_lost(self, n,
                        fmt::format("stopped answering: no heartbeat for {} s",
                                    std::chrono::duration_cast<std::chrono::seconds>(
                                        s.opt.heartbeat_timeout)
                                        .count()));
        }
        self->delayed_send(self, 250ms, tick_atom::value);
      },
  };
}

// The agents, connected and asked who they are; zf::error naming the first that fails.
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
