#pragma once
// Graphs from TOML: the graphs the C++ DSL builds (pipelines/graph.hpp), written in a file, with
// each stage's type looked up by name in a registry. `zeroflow serve` runs one (its default is
// examples/graphs/serve.toml, built in), `zeroflow graph run FILE` runs any.
//
//   [[stage]]                    # stages in order: they start in this order (graph_run.hpp)
//   name = "engine"              # unique; letters, digits, '_' and '-' (no '.': see connect)
//   type = "engine"              # a registered type (zeroflow graph types lists them)
//   [stage.config]               # optional: run-config keys for this stage only, over the run's
//   engine.token_budget = 64     #   config (the keys and checks of a --config file)
//   [stage.options]              # optional: the type's own options (strings, integers, numbers,
//   hf = "models/tiny"           #   booleans); the registry says which a type takes
//
//   [[connect]]
//   from = "engine.backend"      # "stage.port": an output port
//   to = "gateway.backend"       # "stage.port": an input port of the same message type
//   credits = 0                  # optional: > 0 bounds the messages in flight (graph.hpp)
//
// A stage's configuration is, in order: the defaults, --config, --set (the run's config as the
// caller passes it), then its [stage.config], then the caller's overrides again, so the command
// line has the last word over a file (`zeroflow serve --graph g.toml --port 0` listens on a free
// port whatever g.toml says). Each stage's configuration is validated on its own.
//
// Errors name the file and the stage or connection (counted from 1, in file order) and say what
// is wrong: "g.toml: stage #2 'gateway': unknown type 'gatway' (known: announce, engine, ...)",
// "g.toml: connect #1: from = 'engine': expected \"stage.port\"", and graph::check's messages
// for a mis-wired graph prefixed with the file.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "pipelines/graph.hpp"
#include "runtime/core/config.hpp"

namespace zf {

// A stage's [stage.options]: scalars by key. Each getter returns the default for a missing key
// and throws zf::error naming the key when the value has another type (an integer is accepted
// where a number is asked for).
class stage_options {
 public:
  using value = std::variant<bool, int64_t, double, std::string>;
  std::map<std::string, value> values;

  bool has(const std::string& key) const { return values.count(key) > 0; }
  std::string text(const std::string& key, std::string def = {}) const;
  int64_t integer(const std::string& key, int64_t def = 0) const;
  double number(const std::string& key, double def = 0) const;
  bool boolean(const std::string& key, bool def = false) const;
};

// What a factory gets for one [[stage]] table.
struct stage_args {
  std::string name;  // the stage's name
  run_config cfg;    // this stage's configuration (see above), validated
  stage_options options;
};
// Returns the stage; a zf::error it throws is reported with the file and stage.
using stage_factory = std::function<std::unique_ptr<stage>(const stage_args&)>;

struct stage_type {
  std::string help;                  // one line: what it does, its ports
  std::vector<std::string> options;  // the option keys it takes (others are refused)
  stage_factory make;
};

class stage_registry {
 public:
  void add(const std::string& type, stage_type t);  // zf::error if the name is taken
  const stage_type* find(const std::string& type) const;
  std::vector<std::string> types() const;  // sorted
 private:
  std::map<std::string, stage_type> types_;
};

// What the command line gives the built-in types when a stage's options do not say: the model
// an engine serves (--checkpoint DIR | --hf DIR, and --data-dir for a checkpoint's tokenizer),
// a train stage's run folder and resume point (--out, --resume), its early stop (--stop-after)
// and a stop flag (Ctrl-C: training stops after the step, checkpoints and reports).
class rl_session;
namespace actors {
class console_site;
}
struct stage_defaults {
  std::string checkpoint{}, hf{}, data_dir{};
  std::string train_out{}, train_resume{};
  int stop_at_step = 0;
  std::atomic<bool>* stop = nullptr;
  bool quiet = false;  // train --quiet: no banner, no progress line (notes still print)
  // serve --run-dir: the gateways' run folder ("" = no recording); unset: runs/serve-<time>.
  std::optional<std::string> serve_run_dir{};
  // serve --console: the gateways serve the console under /console (actors/console_server.hpp).
  std::shared_ptr<actors::console_site> console{};
  // The RL stages' run (pipelines/rl_session.hpp), by a stage's configuration; unset: one made
  // by the first RL stage from its configuration and the fields above (train_out its folder).
  std::function<std::shared_ptr<zf::rl_session>(const run_config&)> rl_run{};
};

// The built-in types (pipelines/graph_builtin.cpp):
//   engine   (stages::engine_stage) engine.* keys; options checkpoint | hf | random (+ seed)
//   gateway  (stages::gateway_stage) server.* keys; option run_dir (where it records the server)
//   announce prints "zeroflow: serving MODEL (context N) on http://HOST:PORT/v1" per endpoint
//   train    (stages::train_stage) the run's config; options out, resume, publish_every,
//            print_sample, stop_at_step
//   monitor  (stages::monitor_stage) the progress line; option print_every
//   report   prints how a training stage ended (rank 0 of a process group)
//   rollout, score, policy, rl_monitor: an RL run's roles (pipelines/rl_session.hpp)
stage_registry builtin_stages(const stage_defaults& d = {});

// The graph described by toml_text (source names it in messages), each stage made by its type's
// factory with its configuration (cfg, then [stage.config], then overrides), then checked
// (graph::check). zf::error as described above.
graph build_graph(const std::string& toml_text, const std::string& source, const run_config& cfg,
                  const stage_registry& reg, const std::vector<std::string>& overrides = {});

// The stages (with their ports) and connections, one per line, for `zeroflow graph check`.
std::string describe(const graph& g);

// examples/graphs/serve.toml as built into the binary (`zeroflow serve` without --graph).
const std::string& default_serve_graph();
// examples/graphs/train.toml as built in (`zeroflow train` without --graph).
const std::string& default_train_graph();

}  // namespace zf
