#include "runtime/cluster/launch_tracker.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace zf::cluster {

launch_tracker::launch_tracker(std::vector<node_addr> nodes, int nproc_per_node, int max_restarts,
                               int min_nodes, std::string run_name)
    : ctrl_(std::move(nodes), nproc_per_node, max_restarts, min_nodes),
      run_name_(std::move(run_name)) {}

std::string launch_tracker::begin_attempt(const std::vector<std::string>& args,
                                          clock::time_point now) {
  const auto& att = ctrl_.begin_attempt();
  job_ = fmt::format("{}-a{}", run_name_, att.number);
  ph_ = phase::starting;
  last_beat_.assign(std::size_t(ctrl_.node_count()), now);
  pending_ = static_cast<int>(att.nodes.size());
  return fmt::format("zeroflow launch: attempt {}: {} rank(s) on {} node(s): zeroflow {}",
                     att.number, att.world, att.nodes.size(),
                     fmt::join(attempt_args(args, att.number), " "));
}

launch_tracker::start_note launch_tracker::started(int node, const std::vector<int>& pids) {
  start_note out;
  out.line = fmt::format("zeroflow launch: {} on {}: pids {}", ctrl_.ranks_of(node),
                         ctrl_.node(node).text(), fmt::join(pids, ","));
  const auto& nodes = ctrl_.current().nodes;
  const int first = static_cast<int>(std::find(nodes.begin(), nodes.end(), node) - nodes.begin()) *
                    ctrl_.nproc_per_node();
  for (std::size_t i = 0; i < pids.size(); ++i) {
    const int rank = first + static_cast<int>(i);
    out.rank_headers.emplace_back(
        rank, fmt::format("--- zeroflow launch: attempt {}, rank {} (pid {}) on {} ---",
                          ctrl_.current().number, rank, pids[i], ctrl_.node(node).text()));
  }
  if (--pending_ == 0) {
    ph_ = phase::running;
    out.all_started = true;
  }
  return out;
}

std::vector<int> launch_tracker::begin_stop() {
  ph_ = phase::stopping;
  std::vector<int> ask;
  for (int n : ctrl_.current().nodes)
    if (ctrl_.alive(n)) ask.push_back(n);
  pending_ = static_cast<int>(ask.size());
  return ask;
}

bool launch_tracker::interrupt() {
  if (interrupted_) return false;
  interrupted_ = true;
  return true;
}

launch_tracker::outcome launch_tracker::after_stop() const {
  if (interrupted_) return {false, 130, ""};  // said when it happened
  if (refused_) return {false, 2, ""};
  if (ctrl_.should_restart())
    return {true, 0,
            fmt::format("zeroflow launch: restart {} of {} on {} node(s), from the last "
                        "checkpoint",
                        ctrl_.restarts_used() + 1, ctrl_.max_restarts(), ctrl_.alive_count())};
  const int code = ctrl_.exit_code() ? ctrl_.exit_code() : 1;
  const bool spent = ctrl_.restarts_used() >= ctrl_.max_restarts();
  return {false, code,
          fmt::format("zeroflow launch: the job failed ({}); {}; exit code {}", ctrl_.failure(),
                      spent ? fmt::format("{} of {} restarts used", ctrl_.restarts_used(),
                                          ctrl_.max_restarts())
                            : fmt::format("only {} node(s) alive", ctrl_.alive_count()),
                      code)};
}

void launch_tracker::beat(const std::string& job, int node_in_job, clock::time_point now) {
  const auto& nodes = ctrl_.current().nodes;
  if (job != job_ || node_in_job < 0 || node_in_job >= static_cast<int>(nodes.size())) return;
  last_beat_[static_cast<std::size_t>(nodes[static_cast<std::size_t>(node_in_job)])] = now;
}

std::vector<int> launch_tracker::overdue(clock::time_point now,
                                         std::chrono::milliseconds timeout) const {
  std::vector<int> out;
  if (ph_ != phase::running) return out;
  for (int n : ctrl_.current().nodes)
    if (ctrl_.alive(n) && now - last_beat_[static_cast<std::size_t>(n)] > timeout) out.push_back(n);
  return out;
}

std::string launch_tracker::overdue_cause(std::chrono::milliseconds timeout) {
  return fmt::format("stopped answering: no heartbeat for {} s",
                     std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
}

}  // namespace zf::cluster
