#include "actors/monitor.hpp"

#include <cstdio>
#include <fstream>

#include "runtime/error.hpp"

namespace zf::actors {
namespace {

struct monitor_state {
  std::ofstream out;
  monitor_options opt;
  bool line_open = false;  // a \r progress line is on screen
};

monitor_actor::behavior_type monitor(monitor_actor::stateful_pointer<monitor_state> self,
                                     monitor_options o) {
  self->state.opt = o;
  self->state.out.open(o.metrics_file, std::ios::app);
  if (!self->state.out) fail("cannot open metrics file {}", o.metrics_file.string());
  return {
      [self](metrics_atom, const step_metrics& m) {
        auto& s = self->state;
        s.out << to_json_line(m) << '\n';
        s.out.flush();
        if (s.opt.quiet) return;
        std::string line = progress_line(m);
        if (s.opt.tty) {
          std::fprintf(stderr, "\r\033[K%s", line.c_str());
          s.line_open = true;
          if (m.val_loss >= 0) {
            std::fputc('\n', stderr);
            s.line_open = false;
          }
        } else if (m.step % s.opt.print_every == 0 || m.val_loss >= 0 || m.step == m.total_steps) {
          std::fprintf(stderr, "%s\n", line.c_str());
        }
        std::fflush(stderr);
      },
      [self](note_atom, const std::string& text) {
        auto& s = self->state;
        if (s.line_open) std::fputc('\n', stderr);
        s.line_open = false;
        std::fprintf(stderr, "%s\n", text.c_str());
        std::fflush(stderr);
      },
      [self](flush_atom) -> bool {
        auto& s = self->state;
        if (s.line_open) std::fputc('\n', stderr);
        s.line_open = false;
        s.out.flush();
        std::fflush(stderr);
        return true;
      },
  };
}

}  // namespace

monitor_actor spawn_monitor(caf::actor_system& sys, const monitor_options& o) {
  return sys.spawn(monitor, o);
}

}  // namespace zf::actors
