#include "actors/monitor.hpp"

#include <cstdio>
#include <fstream>

#include "runtime/core/error.hpp"

namespace zf::actors {
namespace {

struct monitor_state {
  std::ofstream out;
  std::shared_ptr<train_observer> observer;
};

monitor_actor::behavior_type monitor(monitor_actor::stateful_pointer<monitor_state> self,
                                     monitor_options o) {
  self->state.observer = std::move(o.observer);
  self->state.out.open(o.metrics_file, std::ios::app);
  if (!self->state.out) fail("cannot open metrics file {}", o.metrics_file.string());
  return {
      [self](metrics_atom, const step_metrics& m) {
        auto& s = self->state;
        s.out << to_json_line(m) << '\n';
        s.out.flush();
        if (s.observer) s.observer->metrics(m);
      },
      [self](note_atom, const std::string& text) {
        if (self->state.observer) {
          self->state.observer->note(text);
        } else {
          std::fprintf(stderr, "%s\n", text.c_str());
          std::fflush(stderr);
        }
      },
      [self](flush_atom) -> bool {
        auto& s = self->state;
        s.out.flush();
        if (s.observer) s.observer->flush();
        return true;
      },
  };
}

}  // namespace

monitor_actor spawn_monitor(caf::actor_system& sys, const monitor_options& o) {
  return sys.spawn(monitor, o);
}

}  // namespace zf::actors
