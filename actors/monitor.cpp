#include "actors/monitor.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>

#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"
#include "runtime/monitor/tensorboard.hpp"

namespace zf::actors {
namespace {

// The event file of a run; warned: its failure has been said.
struct tensorboard_sink {
  std::unique_ptr<zf::monitor::tensorboard_writer> writer;
  bool warned = false;
};

struct monitor_state {
  std::ofstream out;
  std::shared_ptr<train_observer> observer;
  std::optional<tensorboard_sink> tb;
};

void say(monitor_state& s, const std::string& text) {
  if (s.observer) {
    s.observer->note(text);
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }
}

// One step's figures as TensorBoard scalars: every number metrics.jsonl has (to_json_line), under
// "train/<its key>", the optional ones only when present.
void write_scalars(zf::monitor::tensorboard_writer& w, const step_metrics& m) {
  const double now = unix_now();
  const auto add = [&](const char* tag, double v) { w.add_scalar(tag, m.step, v, now); };
  add("train/loss", m.loss);
  add("train/lr", m.lr);
  add("train/grad_norm", m.grad_norm);
  add("train/tokens_per_s", m.tokens_per_s);
  add("train/step_ms", m.step_ms);
  add("train/tokens", static_cast<double>(m.tokens));
  add("train/elapsed_s", m.elapsed_s);
  add("train/param_bytes", m.param_bytes);
  add("train/grad_bytes", m.grad_bytes);
  add("train/optim_bytes", m.optim_bytes);
  add("train/comm_bytes", m.comm_bytes);
  add("train/data_wait_ms", m.data_wait_ms);
  if (m.val_loss >= 0) add("train/val_loss", m.val_loss);
  if (m.ckpt_write_ms >= 0) add("train/ckpt_write_ms", m.ckpt_write_ms);
  // data efficiency (issue 13): the numbers of to_json_line's optional keys
  if (m.layer_tokens > 0) add("train/layer_tokens", static_cast<double>(m.layer_tokens));
  if (m.seqlen > 0) add("train/seqlen", m.seqlen);
  if (m.pool_difficulty >= 0) add("train/difficulty", m.pool_difficulty);
  if (m.ltd_layers > 0) {
    add("train/ltd_keep", m.ltd_keep > 0 ? m.ltd_keep : m.ltd_t);
    add("train/ltd_kept_fraction",
        m.ltd_keep > 0 && m.ltd_t > 0 ? double(m.ltd_keep) / m.ltd_t : 1.0);
    add("train/ltd_layers", m.ltd_layers);
  }
}

// Writes what is buffered; says a failure once (never throws).
void flush_tensorboard(monitor_state& s) {
  if (!s.tb) return;
  auto& tb = *s.tb;
  tb.writer->flush();
  if (tb.writer->failures() > 0 && !tb.warned) {
    tb.warned = true;
    say(s, fmt::format("warning: cannot write the TensorBoard event file {}; training goes on "
                       "without it",
                       tb.writer->file().string()));
  }
}

monitor_actor::behavior_type monitor(monitor_actor::stateful_pointer<monitor_state> self,
                                     monitor_options o) {
  self->state.observer = std::move(o.observer);
  self->state.out.open(o.metrics_file, std::ios::app);
  if (!self->state.out) fail("cannot open metrics file {}", o.metrics_file.string());
  if (!o.tensorboard_dir.empty()) {
    auto& tb = self->state.tb.emplace();
    tb.writer = std::make_unique<zf::monitor::tensorboard_writer>(o.tensorboard_dir);
    flush_tensorboard(self->state);  // a folder that cannot be written is said at once
  }
  return {
      [self](metrics_atom, const step_metrics& m) {
        auto& s = self->state;
        s.out << to_json_line(m) << '\n';
        s.out.flush();
        if (s.tb) {  // one write per step, as metrics.jsonl: a stalled run shows all it did
          write_scalars(*s.tb->writer, m);
          flush_tensorboard(s);
        }
        if (s.observer) s.observer->metrics(m);
      },
      [self](note_atom, const std::string& text) { say(self->state, text); },
      [self](flush_atom) -> bool {
        auto& s = self->state;
        s.out.flush();
        flush_tensorboard(s);
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
