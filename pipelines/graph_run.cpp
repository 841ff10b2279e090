// The graph runtime (graph_run.hpp). Bookkeeping, all under one mutex (control traffic only):
// per connection the messages in flight (for credits); per stage the inputs still open and
// whether it is done. Messages go to the receiving stage's inbox actor as graph_msg; an end
// marker (data == nullptr) closes one connection after the messages sent before it.
#include "pipelines/graph_run.hpp"

#include <caf/all.hpp>
#include <condition_variable>
#include <map>
#include <mutex>

#include "runtime/core/error.hpp"

namespace zf {

struct graph_msg {
  int connection = -1;
  std::shared_ptr<const void> data;  // nullptr: the connection is closed
};

}  // namespace zf

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::graph_msg)

namespace zf {

void stage::start(stage_context& ctx) {
  (void)ctx;
}
void stage::inputs_closed(stage_context& ctx) {
  ctx.done();
}

class graph_runtime {
 public:
  graph_runtime(graph& g, const graph_run_options& o);
  void run();

  // stage_context's calls
  void set_handler(stage& s, int port, std::function<void(const std::shared_ptr<const void>&)> h);
  void emit(stage& s, int port, std::shared_ptr<const void> msg);
  void done(stage& s);
  void fail_run(stage& s, const std::string& why);
  bool stopping() const { return stopping_.load(); }
  caf::actor_system& system() { return sys_; }
  const graph& topology() const { return g_; }

 private:
  struct stage_state {
    std::unique_ptr<stage_context> ctx;
    caf::actor inbox;
    std::map<int, std::function<void(const std::shared_ptr<const void>&)>> handlers;
    int open_inputs = 0;  // connections into the stage not yet closed
    bool done = false;
  };
  void deliver(stage& s, const graph_msg& m);
  void send(int ci, std::shared_ptr<const void> data);
  stage_state& state(const stage& s) { return states_.at(&s); }

  graph& g_;
  graph_run_options o_;
  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  std::map<const stage*, stage_state> states_;
  std::vector<int> in_flight_;  // per connection
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // every stage's start returned
  std::string error_;
  int remaining_ = 0;  // stages not done
};

namespace {
caf::actor_system_config& configured(caf::actor_system_config& c, int threads) {
  c.set("scheduler.max-threads", threads);
  c.set("logger.verbosity", caf::atom("quiet"));
  return c;
}
}  // namespace

graph_runtime::graph_runtime(graph& g, const graph_run_options& o)
    : g_(g), o_(o), sys_(configured(cfg_, o.scheduler_threads)) {
  in_flight_.assign(g.connections().size(), 0);
  for (const auto& s : g.stages()) {
    stage_state& st = states_[s.get()];
    st.ctx = std::make_unique<stage_context>(*this, *s);
    for (const auto& c : g.connections())
      if (c.to == s.get()) ++st.open_inputs;
  }
  remaining_ = static_cast<int>(g.stages().size());
  for (const auto& s : g.stages()) {
    stage_state& st = state(*s);
    if (st.open_inputs == 0) continue;
    stage* sp = s.get();
    // sp travels as a spawn argument, not a capture: CAF 0.17 dereferences a null argument
    // tuple for a function actor spawned without arguments (UBSan reports it).
    st.inbox = sys_.spawn(
        [this](caf::event_based_actor*, stage* s) -> caf::behavior {
          return {[this, s](const graph_msg& m) { deliver(*s, m); }};
        },
        sp);
  }
}

void graph_runtime::set_handler(stage& s, int port,
                                std::function<void(const std::shared_ptr<const void>&)> h) {
  std::lock_guard lk(mu_);
  state(s).handlers[port] = std::move(h);
}

void graph_runtime::send(int ci, std::shared_ptr<const void> data) {
  const connection& c = g_.connections()[std::size_t(ci)];
  caf::anon_send(state(*c.to).inbox, graph_msg{ci, std::move(data)});
}

void graph_runtime::emit(stage& s, int port, std::shared_ptr<const void> msg) {
  const auto& conns = g_.connections();
  for (std::size_t ci = 0; ci < conns.size(); ++ci) {
    const connection& c = conns[ci];
    if (c.from != &s || c.from_port != port) continue;
    {
      std::unique_lock lk(mu_);
      if (c.credits > 0) cv_.wait(lk, [&] { return in_flight_[ci] < c.credits || stopping_; });
      if (stopping_) return;
      ++in_flight_[ci];
    }
    send(static_cast<int>(ci), msg);
  }
}

void graph_runtime::deliver(stage& s, const graph_msg& m) {
  {  // nothing is handled before every stage has registered its handlers (start is quick)
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return started_ || stopping_; });
  }
  const connection& c = g_.connections()[std::size_t(m.connection)];
  if (!m.data) {  // end marker: the connection is closed
    bool all_closed = false;
    {
      std::lock_guard lk(mu_);
      all_closed = --state(s).open_inputs == 0;
    }
    if (all_closed && !stopping_) s.inputs_closed(*state(s).ctx);
    return;
  }
  std::function<void(const std::shared_ptr<const void>&)> h;
  {
    std::lock_guard lk(mu_);
    auto it = state(s).handlers.find(c.to_port);
    if (it != state(s).handlers.end()) h = it->second;
  }
  try {
    if (h && !stopping_) h(m.data);
  } catch (const std::exception& e) {
    fail_run(s, "port " + s.ports()[c.to_port].name + ": " + e.what());
  }
  std::lock_guard lk(mu_);
  --in_flight_[std::size_t(m.connection)];
  cv_.notify_all();
}

void graph_runtime::done(stage& s) {
  {
    std::lock_guard lk(mu_);
    if (state(s).done) return;
    state(s).done = true;
    if (--remaining_ == 0) stopping_ = true;
    cv_.notify_all();
  }
  const auto& conns = g_.connections();
  for (std::size_t ci = 0; ci < conns.size(); ++ci)
    if (conns[ci].from == &s) send(static_cast<int>(ci), nullptr);  // after what was sent
}

void graph_runtime::fail_run(stage& s, const std::string& why) {
  std::lock_guard lk(mu_);
  if (error_.empty()) error_ = "stage '" + s.name() + "': " + why;
  stopping_ = true;
  cv_.notify_all();
}

void graph_runtime::run() {
  for (const auto& s : g_.stages()) {
    try {
      s->start(*state(*s).ctx);
    } catch (const std::exception& e) {
      fail_run(*s, std::string("start: ") + e.what());
      break;
    }
  }
  {
    std::unique_lock lk(mu_);
    started_ = true;
    cv_.notify_all();
    while (!stopping_) {
      cv_.wait_for(lk, std::chrono::milliseconds(50));
      if (o_.stop && o_.stop->load()) stopping_ = true;
    }
  }
  cv_.notify_all();  // wake producers waiting for credits
  {                  // inboxes first: no handler runs once the stages stop
    caf::scoped_actor self{sys_};
    int n = 0;
    for (auto& [s, st] : states_) {
      if (!st.inbox) continue;
      self->monitor(st.inbox);
      self->send_exit(st.inbox, caf::exit_reason::user_shutdown);
      ++n;
    }
    for (int i = 0; i < n; ++i) self->receive([](const caf::down_msg&) {});
  }
  for (auto it = g_.stages().rbegin(); it != g_.stages().rend(); ++it) (*it)->stop();
  sys_.await_all_actors_done();
  if (!error_.empty()) throw error(error_);
}

caf::actor_system& stage_context::system() {
  return rt_.system();
}
void stage_context::done() {
  rt_.done(stage_);
}
bool stage_context::stopping() const {
  return rt_.stopping();
}
void stage_context::fail_run(const std::string& why) {
  rt_.fail_run(stage_, why);
}
void stage_context::set_handler(int port,
                                std::function<void(const std::shared_ptr<const void>&)> h) {
  rt_.set_handler(stage_, port, std::move(h));
}
void stage_context::emit_erased(int port, std::shared_ptr<const void> msg) {
  rt_.emit(stage_, port, std::move(msg));
}

bool stage_context::connected_erased(int port) const {
  return !rt_.topology().from(&stage_, port).empty();
}

void run_graph(graph& g, const graph_run_options& o) {
  g.check();
  graph_runtime rt(g, o);
  rt.run();
}

}  // namespace zf
