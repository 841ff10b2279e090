#include "runtime/train/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/model/moe.hpp"

namespace zf {

void set_moe_figures(const moe::step_stats& s, step_metrics& m) {
  double choices = 0, dropped = 0, entropy = 0;
  for (const auto& l : s.layers) {
    double total = 0, top = 0;
    for (double c : l.counts) {
      total += c;
      top = std::max(top, c);
    }
    std::vector<double> frac;
    for (double c : l.counts) frac.push_back(total > 0 ? c / total : 0.0);
    m.moe_layers.push_back(l.layer);
    m.moe_load.push_back(std::move(frac));
    if (total > 0)
      m.moe_imbalance = std::max(m.moe_imbalance, top / (total / double(l.counts.size())));
    choices += total;
    dropped += l.dropped;
    const double f = l.forwards > 0 ? l.forwards : 1;
    m.moe_balance += l.balance / f;
    m.moe_z_loss += l.z_loss / f;
    entropy += l.entropy / f;
  }
  m.moe_dropped = choices > 0 ? dropped / choices : 0;
  m.moe_entropy = s.layers.empty() ? 0 : entropy / double(s.layers.size());
}

std::string to_json_line(const step_metrics& m) {
  nlohmann::json j{{"step", m.step},
                   {"loss", m.loss},
                   {"lr", m.lr},
                   {"grad_norm", m.grad_norm},
                   {"tokens_per_s", m.tokens_per_s},
                   {"step_ms", m.step_ms},
                   {"tokens", m.tokens},
                   {"elapsed_s", m.elapsed_s},
                   {"param_bytes", m.param_bytes},
                   {"grad_bytes", m.grad_bytes},
                   {"optim_bytes", m.optim_bytes},
                   {"comm_bytes", m.comm_bytes},
                   {"ranks", m.ranks},
                   {"data_wait_ms", m.data_wait_ms}};
  if (m.val_loss >= 0) j["val_loss"] = m.val_loss;
  if (m.loss_scale > 0) {
    j["loss_scale"] = m.loss_scale;
    j["skipped_steps"] = m.skipped_steps;
    j["skipped"] = m.skipped;
  }
  if (m.ckpt_write_ms >= 0) j["ckpt_write_ms"] = m.ckpt_write_ms;
  if (m.layer_tokens > 0) j["layer_tokens"] = m.layer_tokens;
  if (m.seqlen > 0) j["seqlen"] = m.seqlen;
  if (m.pool_difficulty >= 0) {
    j["difficulty"] = m.pool_difficulty;
    j["difficulty_metric"] = m.pool_metric;
    j["difficulty_type"] = m.pool_percentile ? "percentile" : "value";
  }
  if (!m.moe_layers.empty()) {
    j["moe_layers"] = m.moe_layers;
    j["moe_load"] = m.moe_load;
    j["moe_dropped"] = m.moe_dropped;
    j["moe_balance_loss"] = m.moe_balance;
    j["moe_z_loss"] = m.moe_z_loss;
    j["moe_entropy"] = m.moe_entropy;
    j["moe_imbalance"] = m.moe_imbalance;
  }
  if (m.ltd_layers > 0) {  // kept fraction of every dropping layer (1 once the schedule is done)
    j["ltd_keep"] = m.ltd_keep > 0 ? m.ltd_keep : m.ltd_t;
    j["ltd_kept_fraction"] = m.ltd_keep > 0 && m.ltd_t > 0 ? double(m.ltd_keep) / m.ltd_t : 1.0;
    j["ltd_layers"] = m.ltd_layers;
  }
  return j.dump();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string progress_line(const step_metrics& m) {
  double rate = m.step_ms > 0 ? 1000.0 / m.step_ms : 0;
  double eta = rate > 0 ? (m.total_steps - m.step) / rate : -1;
  std::string s =
      fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | {:.0f} tok/s | ETA {}", m.step,
                  m.total_steps, m.loss, m.lr, m.tokens_per_s, format_duration(eta));
  if (m.ranks > 1)
    s += fmt::format(" | rank mem p/g/o {:.0f}/{:.0f}/{:.0f} MiB | comm {:.1f} MiB/step",
                     m.param_bytes / 1048576, m.grad_bytes / 1048576, m.optim_bytes / 1048576,
                     m.comm_bytes / 1048576);
  if (m.loss_scale > 0)
    s +=
        fmt::format(" | loss scale {:g}{}", m.loss_scale,
                    m.skipped ? fmt::format(" (overflow: step skipped, {} so far)", m.skipped_steps)
                              : std::string());
  if (m.seqlen > 0) s += fmt::format(" | seqlen {}", m.seqlen);
  if (m.pool_difficulty >= 0)
    s +=
        fmt::format(" | {} {}{}", m.pool_metric, m.pool_percentile ? "p" : "<=", m.pool_difficulty);
  if (m.ltd_layers > 0 && m.ltd_keep > 0) s += fmt::format(" | ltd {}/{}", m.ltd_keep, m.ltd_t);
  if (!m.moe_layers.empty())
    s += fmt::format(" | moe load max/mean {:.2f} drop {:.1f}%", m.moe_imbalance,
                     100 * m.moe_dropped);
  if (m.val_loss >= 0) s += fmt::format(" | val {:.4f}", m.val_loss);
  return s;
}

void progress_printer::metrics(const step_metrics& m) {
  const std::string line = progress_line(m);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    line_open_ = true;
    if (m.val_loss >= 0) {
      std::fputc('\n', stderr);
      line_open_ = false;
    }
  } else if (m.step % every_ == 0 || m.val_loss >= 0 || m.step == m.total_steps) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void progress_printer::note(const std::string& text) {
  if (line_open_) std::fputc('\n', stderr);
  line_open_ = false;
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

void progress_printer::flush() {
  if (line_open_) std::fputc('\n', stderr);
  line_open_ = false;
  std::fflush(stderr);
}

}  // namespace zf
