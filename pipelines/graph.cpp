#include "pipelines/graph.hpp"

#include <algorithm>
#include <functional>
#include <map>

#include "runtime/core/error.hpp"

namespace zf {

int stage::add_port(std::string port, const std::type_info& t, std::string type_name, bool input,
                    bool required, bool merge) {
  for (const auto& p : ports_)
    if (p.name == port) fail("stage: port '{}' declared twice", port);
  ports_.push_back(
      {std::move(port), std::type_index(t), std::move(type_name), input, required, merge});
  return static_cast<int>(ports_.size()) - 1;
}

int stage::port_index(const std::string& port) const {
  for (std::size_t i = 0; i < ports_.size(); ++i)
    if (ports_[i].name == port) return static_cast<int>(i);
  return -1;
}

void graph::adopt(std::string name, std::unique_ptr<stage> s) {
  if (name.empty()) fail("graph: a stage needs a name");
  for (const auto& t : stages_)
    if (t->name() == name) fail("graph: two stages are named '{}'", name);
  s->name_ = std::move(name);
  stages_.push_back(std::move(s));
}

stage& graph::add(std::string name, std::unique_ptr<stage> s) {
  if (!s) fail("graph: stage '{}' is null", name);
  stage& ref = *s;
  adopt(std::move(name), std::move(s));
  return ref;
}

stage& graph::at(const std::string& name) const {
  for (const auto& s : stages_)
    if (s->name() == name) return *s;
  std::string known;
  for (const auto& s : stages_) known += (known.empty() ? "" : ", ") + s->name();
  fail("graph: no stage named '{}' (stages: {})", name, known.empty() ? "none" : known);
}

namespace {

std::string end_name(const stage* s, int port) {
  return s->name() + "." + s->ports()[port].name;
}

}  // namespace

void graph::connect_ports(stage* from, int fp, stage* to, int tp, int credits) {
  const port_desc& a = from->ports()[fp];
  const port_desc& b = to->ports()[tp];
  if (a.input)
    fail("graph: {} is an input port; a connection starts at an output", end_name(from, fp));
  if (!b.input)
    fail("graph: {} is an output port; a connection ends at an input", end_name(to, tp));
  if (a.type != b.type)
    fail("graph: cannot connect {} ({}) to {} ({}): the message types differ", end_name(from, fp),
         a.type_name, end_name(to, tp), b.type_name);
  if (credits < 0)
    fail("graph: credits of {} -> {} must be >= 0", end_name(from, fp), end_name(to, tp));
  connections_.push_back({from, fp, to, tp, credits});
}

void graph::connect(const std::string& from_stage, const std::string& from_port,
                    const std::string& to_stage, const std::string& to_port, int credits) {
  stage& a = at(from_stage);
  stage& b = at(to_stage);
  const int fp = a.port_index(from_port), tp = b.port_index(to_port);
  auto ports_of = [](const stage& s) {
    std::string p;
    for (const auto& d : s.ports()) p += (p.empty() ? "" : ", ") + d.name;
    return p;
  };
  if (fp < 0)
    fail("graph: stage '{}' has no port '{}' (ports: {})", from_stage, from_port, ports_of(a));
  if (tp < 0)
    fail("graph: stage '{}' has no port '{}' (ports: {})", to_stage, to_port, ports_of(b));
  connect_ports(&a, fp, &b, tp, credits);
}

std::vector<const connection*> graph::from(const stage* s, int port) const {
  std::vector<const connection*> out;
  for (const auto& c : connections_)
    if (c.from == s && c.from_port == port) out.push_back(&c);
  return out;
}

std::vector<const connection*> graph::into(const stage* s, int port) const {
  std::vector<const connection*> out;
  for (const auto& c : connections_)
    if (c.to == s && c.to_port == port) out.push_back(&c);
  return out;
}

void graph::check() const {
  if (stages_.empty()) fail("graph: no stages");
  for (const auto& s : stages_) {
    for (std::size_t p = 0; p < s->ports().size(); ++p) {
      const port_desc& d = s->ports()[p];
      if (!d.input) continue;
      const std::size_t n = into(s.get(), int(p)).size();
      if (n == 0 && d.required)
        fail("graph: required input {} ({}) is not connected", end_name(s.get(), int(p)),
             d.type_name);
      if (n > 1 && !d.merge)
        fail("graph: input {} has {} connections; it takes one (declare it merge to take more)",
             end_name(s.get(), int(p)), n);
    }
  }
  check_cycles();
}

// Depth-first search over the unbounded connections only: a back edge closes a cycle that no
// credit bounds.
void graph::check_cycles() const {
  std::map<const stage*, int> state;  // 0 new, 1 on the path, 2 done
  std::vector<const connection*> path;
  std::function<void(const stage*)> visit = [&](const stage* s) {
    state[s] = 1;
    for (const auto& c : connections_) {
      if (c.from != s || c.credits > 0) continue;
      path.push_back(&c);
      if (state[c.to] == 1) {
        std::string cycle;
        auto first = std::find_if(path.begin(), path.end(),
                                  [&](const connection* e) { return e->from == c.to; });
        for (auto it = first; it != path.end(); ++it)
          cycle += end_name((*it)->from, (*it)->from_port) + " -> " +
                   end_name((*it)->to, (*it)->to_port) + (it + 1 == path.end() ? "" : ", ");
        fail("graph: the cycle {} has no credit bound (give one of its connections credits > 0)",
             cycle);
      }
      if (state[c.to] == 0) visit(c.to);
      path.pop_back();
    }
    state[s] = 2;
  };
  for (const auto& s : stages_)
    if (state[s.get()] == 0) visit(s.get());
}

}  // namespace zf
