#pragma once
// Running a graph (pipelines/graph.hpp) on one CAF actor system per process.
//   - Each stage that has input ports gets one actor, its inbox: messages for the stage arrive
//     there one at a time, in order per connection, and run the handler the stage registered
//     for the port (stage_context::on). A stage's handlers never run concurrently.
//   - stage::start runs on the caller's thread, in the order the stages were added; a stage with
//     work of its own (a trainer, an engine, a server) starts its threads or actors there and
//     returns. It emits on its output ports from any of its threads (stage_context::emit).
//   - A connection with credits > 0 bounds the messages in flight on it: emit waits while that
//     many are unhandled (so a producer's thread, never an inbox handler, should emit on it).
//   - run returns once every stage has called done(), or when *stop becomes true; then the
//     inboxes finish the handler they are in and close, and each stage's stop() runs, in
//     reverse order of addition.
// A handler that throws fails the run: run rethrows it as zf::error naming the stage and port.
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "pipelines/graph.hpp"

namespace caf {
class actor_system;
}

namespace zf {

class graph_runtime;

class stage_context {
 public:
  stage_context(graph_runtime& rt, stage& s) : rt_(rt), stage_(s) {}
  caf::actor_system& system();
  const std::string& stage_name() const { return stage_.name(); }

  // Handler of an input port; register in start(). Runs on the stage's inbox actor.
  template <class T, class F>  // F: void(const std::shared_ptr<const T>&)
  void on(in_port<T> p, F handler) {
    set_handler(p.index, [h = std::move(handler)](const std::shared_ptr<const void>& m) {
      h(std::static_pointer_cast<const T>(m));
    });
  }
  // Sends msg to every connection of the port (none: dropped).
  template <class T>
  void emit(out_port<T> p, std::shared_ptr<const T> msg) {
    emit_erased(p.index, std::static_pointer_cast<const void>(std::move(msg)));
  }
  // True if the port has a connection (a stage may skip work nobody consumes).
  template <class T>
  bool connected(out_port<T> p) const {
    return connected_erased(p.index);
  }
  // This stage's work is over (run returns when every stage is done).
  void done();
  // True once the run is stopping (a stop request, a failed stage, every stage done).
  bool stopping() const;
  // Fails the run with this message (from any thread of the stage).
  void fail_run(const std::string& why);

 private:
  void set_handler(int port, std::function<void(const std::shared_ptr<const void>&)> h);
  void emit_erased(int port, std::shared_ptr<const void> msg);
  bool connected_erased(int port) const;
  graph_runtime& rt_;
  stage& stage_;
};

struct graph_run_options {
  std::atomic<bool>* stop = nullptr;  // set to true to stop the run
  int scheduler_threads = 2;          // CAF scheduler threads (inboxes; compute runs elsewhere)
};

// Checks the graph (graph::check), starts every stage and waits as described above.
void run_graph(graph& g, const graph_run_options& o = {});

}  // namespace zf
