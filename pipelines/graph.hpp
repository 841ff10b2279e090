#pragma once
// The graph DSL's core: stages with typed input and output ports, connections between them, and
// the checks that refuse a mis-wired graph before anything starts.
//
//   zf::graph g;
//   auto& src = g.add<my_source>("numbers");      // a stage declares its ports in its constructor
//   auto& sum = g.add<my_sum>("sum");
//   g.connect(src.out, sum.in);                   // out_port<T> -> in_port<T>: T must match, at
//                                                 // compile time (a mismatch does not compile)
//   g.connect("numbers", "out", "sum", "in");     // the same by name (graphs built from TOML):
//                                                 // the types are compared at run time
//   g.check();                                    // zf::error naming stages and ports
//
// Rules (check): every required input port is connected; a connection joins ports of the same
// message type; an input takes at most one connection unless it is declared `merge`; every cycle
// has at least one connection with a credit bound (credits > 0: at most that many messages in
// flight on it), since an unbounded cycle can grow its queues without limit.
// Messages travel as std::shared_ptr<const T> (no copies inside a process); how they are
// delivered (CAF actors, one system per process) is pipelines/graph_run.
#include <cstddef>
#include <memory>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <vector>

namespace zf {

class graph;
class stage;
class stage_context;

// A port's message type as it appears in messages: message_name<T>::value if specialised
// (ZF_MESSAGE_NAME), else the compiler's type name.
template <class T>
struct message_name {
  static std::string get() { return typeid(T).name(); }
};
#define ZF_MESSAGE_NAME(T, text)              \
  template <>                                 \
  struct zf::message_name<T> {                \
    static std::string get() { return text; } \
  }

struct port_desc {
  std::string name;
  std::type_index type;
  std::string type_name;
  bool input = false;
  bool required = true;  // inputs: must be connected
  bool merge = false;    // inputs: may take several connections
};

template <class T>
struct out_port {
  stage* owner = nullptr;
  int index = -1;
};
template <class T>
struct in_port {
  stage* owner = nullptr;
  int index = -1;
};

// A stage: a named node of the graph with ports (declared in its constructor through output()
// and input()) and its behaviour when the graph runs (start, inputs_closed, stop).
class stage {
 public:
  virtual ~stage() = default;
  // Running (pipelines/graph_run): start registers input handlers and starts the stage's own
  // work; it must not block. A stage ends by calling ctx.done(), which closes its outputs; a
  // stage whose connected inputs have all been closed (and handled) gets inputs_closed, which by
  // default is done. stop ends its work early (a stop request, a failure, the end of the run).
  virtual void start(stage_context& ctx);
  virtual void inputs_closed(stage_context& ctx);
  virtual void stop() {}
  const std::string& name() const { return name_; }
  const std::vector<port_desc>& ports() const { return ports_; }
  int port_index(const std::string& port) const;  // -1 if none

 protected:
  template <class T>
  out_port<T> output(std::string port) {
    return {this,
            add_port(std::move(port), typeid(T), message_name<T>::get(), false, false, false)};
  }
  template <class T>
  in_port<T> input(std::string port, bool required = true, bool merge = false) {
    return {this,
            add_port(std::move(port), typeid(T), message_name<T>::get(), true, required, merge)};
  }

 private:
  friend class graph;
  int add_port(std::string port, const std::type_info& t, std::string type_name, bool input,
               bool required, bool merge);
  std::string name_;
  std::vector<port_desc> ports_;
};

struct connection {
  stage* from = nullptr;
  int from_port = -1;
  stage* to = nullptr;
  int to_port = -1;
  int credits = 0;  // > 0: at most this many messages in flight; 0: unbounded
};

class graph {
 public:
  // Adds a stage (constructed from args) under a unique name; zf::error on a duplicate.
  template <class S, class... A>
  S& add(std::string name, A&&... args) {
    auto s = std::make_unique<S>(std::forward<A>(args)...);
    S& ref = *s;
    adopt(std::move(name), std::move(s));
    return ref;
  }
  // The same for a stage made elsewhere (graphs built from TOML: pipelines/graph_toml.hpp).
  stage& add(std::string name, std::unique_ptr<stage> s);
  template <class T>
  void connect(out_port<T> from, in_port<T> to, int credits = 0) {
    connect_ports(from.owner, from.index, to.owner, to.index, credits);
  }
  // By names: zf::error for an unknown stage or port, an input used as output (or the reverse),
  // or ports of different message types, naming both ends.
  void connect(const std::string& from_stage, const std::string& from_port,
               const std::string& to_stage, const std::string& to_port, int credits = 0);

  // zf::error listing the first problem (see the rules above) with stage and port names.
  void check() const;

  const std::vector<std::unique_ptr<stage>>& stages() const { return stages_; }
  const std::vector<connection>& connections() const { return connections_; }
  stage& at(const std::string& name) const;  // zf::error if unknown
  // The connections leaving (from) / entering (to) a port.
  std::vector<const connection*> from(const stage* s, int port) const;
  std::vector<const connection*> into(const stage* s, int port) const;

 private:
  void adopt(std::string name, std::unique_ptr<stage> s);
  void connect_ports(stage* from, int from_port, stage* to, int to_port, int credits);
  void check_cycles() const;
  std::vector<std::unique_ptr<stage>> stages_;
  std::vector<connection> connections_;
};

}  // namespace zf
