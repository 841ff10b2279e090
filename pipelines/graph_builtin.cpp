// The stage types every graph file can use (graph_toml.hpp, builtin_stages): the serving and
// training stages (stages_serve.hpp, stages_train.hpp) and two small printing stages.
#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <sstream>

#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/rl_session.hpp"
#include "pipelines/serve_cli.hpp"
#include "pipelines/stages_serve.hpp"
#include "pipelines/stages_train.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/launch.hpp"
#include "runtime/model/model.hpp"
#include "storage/fs_util.hpp"

namespace zf {
namespace {

// Prints the address a gateway listens on (scripts and tests read this line); runs until the
// graph stops, like the server it reports.
struct announce_stage : stage {
  in_port<endpoint> at = input<endpoint>("at", true, true);
  void start(stage_context& ctx) override {
    ctx.on(at, [](const std::shared_ptr<const endpoint>& e) {
      std::cerr << fmt::format(
          "zeroflow: serving {} (context {}) on http://{}:{}/v1  (Ctrl-C stops)\n", e->model,
          e->context, e->host, e->port);
    });
  }
  void inputs_closed(stage_context&) override {}
};

// Prints how a training stage ended (once per process group: the other ranks say nothing).
struct report_stage : stage {
  in_port<train_result> result = input<train_result>("result", true, true);
  void start(stage_context& ctx) override {
    ctx.on(result, [](const std::shared_ptr<const train_result>& r) {
      const process_env env = read_process_env();
      if (env.present && env.rank != 0) return;
      std::cerr << fmt::format("zeroflow: training {} at step {}; checkpoint {}\n",
                               r->interrupted ? "stopped" : "done", r->final_step,
                               r->last_checkpoint.empty() ? "none" : r->last_checkpoint);
    });
  }
};

// Random weights of the stage's model.* keys (what a training run starts from with that seed)
// and the tokenizer of its data.* keys.
stages::served_model random_model(const run_config& cfg, uint64_t seed) {
  const param_layout layout = layout_of(cfg.model);
  fbuffer init(layout.total);
  init_params(layout, cfg.model.n_layer, seed, init.data());
  model_spec spec = spec_of(cfg.model);
  spec.name = "random";
  return {std::make_shared<const lm_weights>(make_lm_weights(spec, std::move(init))),
          open_tokenizer(cfg).first};
}

constexpr const char k_which_model[] =
    "give exactly one of --checkpoint DIR and --hf DIR (or the stage's option checkpoint, hf or "
    "random)";

// Where an engine's model comes from: its options (checkpoint, hf, random), else the command
// line's. Loaded when the stage starts, so `zeroflow graph check` reads no weights and needs no
// model; conflicting sources are refused here, a missing one when the stage starts (before the
// stages after it).
stages::model_loader loader_of(const stage_args& a, const stage_defaults& d) {
  const stage_options& o = a.options;
  const bool random = o.boolean("random");
  if (o.has("checkpoint") + o.has("hf") + random > 1)
    fail("give one of the options checkpoint, hf and random");
  if (o.has("seed") && !random) fail("option seed goes with random = true");
  if (random) {
    const uint64_t seed = static_cast<uint64_t>(o.integer("seed", 1));
    return [cfg = a.cfg, seed] { return random_model(cfg, seed); };
  }
  std::string ckpt = o.text("checkpoint", d.checkpoint), hf = o.text("hf", d.hf);
  if (o.has("checkpoint")) hf.clear();
  if (o.has("hf")) ckpt.clear();
  if (!ckpt.empty() && !hf.empty()) fail("{}", k_which_model);
  if (ckpt.empty() && hf.empty())  // refused when it starts: `graph check` needs no model
    return []() -> stages::served_model { fail("{}", k_which_model); };
  return [ckpt, hf, ddir = d.data_dir] {
    auto [w, tok] = load_serving_model(ckpt, hf, ddir);
    return stages::served_model{std::make_shared<const lm_weights>(std::move(w)), std::move(tok)};
  };
}

// server.api_keys, then the lines of server.api_key_file, then $ZEROFLOW_API_KEY.
std::vector<std::string> api_keys_of(const server_config& s) {
  std::vector<std::string> keys = s.api_keys;
  if (!s.api_key_file.empty()) {
    std::istringstream in(storage::read_text_file(s.api_key_file));
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
        line.pop_back();
      if (!line.empty()) keys.push_back(line), ++n;
    }
    if (n == 0) fail("server.api_key_file: {} holds no key", s.api_key_file);
  }
  if (const char* e = std::getenv("ZEROFLOW_API_KEY"); e && *e) keys.emplace_back(e);
  return keys;
}

actors::gateway_options gateway_options_of(const server_config& s) {
  actors::gateway_options o;
  o.host = s.host;
  o.port = s.port;
  o.io_threads = s.io_threads;
  o.enable_weight_updates = s.enable_weight_updates;
  o.api_keys = api_keys_of(s);
  o.protect_metrics = s.protect_metrics;
  o.prepare_threads = s.prepare_threads;
  o.max_connections = s.max_connections;
  o.overflow_connections = s.overflow_connections;
  o.max_body_bytes = static_cast<std::size_t>(s.max_body_bytes);
  o.max_prompt_bytes = static_cast<std::size_t>(s.max_prompt_bytes);
  o.header_timeout_s = s.header_timeout_s;
  o.read_timeout_s = s.read_timeout_s;
  o.write_timeout_s = s.write_timeout_s;
  o.max_output_bytes = static_cast<std::size_t>(s.max_output_bytes);
  const bool loopback = s.host.starts_with("127.") || s.host == "localhost" || s.host == "::1";
  if (o.api_keys.empty() && !loopback)
    std::cerr << fmt::format(
        "zeroflow: WARNING: serving on {} without an API key: anyone who reaches it may use it "
        "(--api-key KEY, --api-key-file FILE or $ZEROFLOW_API_KEY)\n",
        s.host);
  return o;
}

std::string run_folder(const std::string& stage_name) {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&t));
  return "runs/" + stage_name + "-" + buf;
}

// Where and how often a gateway records its server: option run_dir, else --run-dir, else
// runs/serve-<time> (a fresh folder); server.record_every_s.
stages::record_options record_options_of(const stage_args& a, const stage_defaults& d) {
  stages::record_options r;
  if (a.options.has("run_dir")) {
    r.run_dir = a.options.text("run_dir");
  } else if (d.serve_run_dir) {
    r.run_dir = *d.serve_run_dir;
  } else {
    r.run_dir = run_folder("serve");
    r.fresh = true;
  }
  r.every_s = a.cfg.server.record_every_s;
  if (!r.run_dir.empty() && r.every_s > 0) r.config_toml = to_toml(a.cfg);
  r.stop = d.stop;
  return r;
}

run_options train_options_of(const stage_args& a, const stage_defaults& d) {
  run_options o;
  o.out = a.options.text("out", d.train_out.empty() ? run_folder(a.name) : d.train_out);
  o.resume = a.options.text("resume", d.train_resume);
  const int64_t stop_at = a.options.integer("stop_at_step", d.stop_at_step);
  if (stop_at < 0) fail("option stop_at_step must be >= 0, got {}", stop_at);
  o.stop_at_step = static_cast<int>(stop_at);
  o.stop = d.stop;
  o.quiet = d.quiet;
  const int64_t every = a.options.integer("publish_every", 0);
  if (every < 0) fail("option publish_every must be >= 0, got {}", every);
  o.publish_every = static_cast<int>(every);
  o.print_sample = a.options.boolean("print_sample", true);
  return o;
}

}  // namespace

stage_registry builtin_stages(const stage_defaults& d) {
  stage_registry r;
  r.add("engine", {"serving engine (engine.* keys); in weights (weights_update, optional); out "
                   "backend (backend_ref), served (weights_served)",
                   {"checkpoint", "hf", "random", "seed"},
                   [d](const stage_args& a) -> std::unique_ptr<stage> {
                     return std::make_unique<stages::engine_stage>(loader_of(a, d), a.cfg.engine);
                   }});
  r.add("gateway",
        {"OpenAI-compatible HTTP server (server.* keys), recording it in run_dir (default "
         "runs/serve-<time>; \"\" = off); in backend (backend_ref); out listening (endpoint)",
         {"run_dir"},
         [d](const stage_args& a) -> std::unique_ptr<stage> {
           actors::gateway_options o = gateway_options_of(a.cfg.server);
           o.console = d.console;
           return std::make_unique<stages::gateway_stage>(std::move(o), record_options_of(a, d));
         }});
  r.add("announce", {"prints where a server listens; in at (endpoint, merge)",
                     {},
                     [](const stage_args&) -> std::unique_ptr<stage> {
                       return std::make_unique<announce_stage>();
                     }});
  r.add("train", {"training (model, train, optimizer, ... data keys); out weights (weights_update) "
                  "every publish_every steps, metrics (step_metrics), notes (train_note), result "
                  "(train_result) at the end",
                  {"out", "resume", "publish_every", "print_sample", "stop_at_step"},
                  [d](const stage_args& a) -> std::unique_ptr<stage> {
                    return std::make_unique<stages::train_stage>(a.cfg, train_options_of(a, d));
                  }});
  r.add("monitor", {"the progress line of a training run; in metrics (step_metrics, merge), notes "
                    "(train_note, optional)",
                    {"print_every"},
                    [d](const stage_args& a) -> std::unique_ptr<stage> {
                      const int64_t every = a.options.integer("print_every", 10);
                      if (every < 1) fail("option print_every must be >= 1, got {}", every);
                      return std::make_unique<stages::monitor_stage>(
                          ::isatty(STDERR_FILENO), static_cast<int>(every), d.quiet);
                    }});
  auto session = d.rl_run;
  if (!session) {  // one run for the graph's RL stages, made by the first from its configuration
    auto made = std::make_shared<std::shared_ptr<rl_session>>();
    auto mu = std::make_shared<std::mutex>();
    session = [d, made, mu](const run_config& cfg) {
      std::lock_guard lk(*mu);
      if (!*made) {
        rl_run_options o;
        o.out = d.train_out.empty() ? "runs/rl-graph" : d.train_out;
        o.checkpoint = d.checkpoint;
        o.resume = !d.train_resume.empty();
        o.stop_after = d.stop_at_step;
        o.stop = d.stop;
        o.quiet = d.quiet;
        run_config c = cfg;
        if (!d.hf.empty()) c.model.init_hf = d.hf;
        *made = std::make_shared<rl_session>(c, o);
      }
      return *made;
    };
  }
  add_rl_stage_types(r, session);
  r.add("report", {"prints how training ended; in result (train_result, merge)",
                   {},
                   [](const stage_args&) -> std::unique_ptr<stage> {
                     return std::make_unique<report_stage>();
                   }});
  return r;
}

const std::string& default_train_graph() {
  static const std::string text =
#include "train_graph.inc"  // examples/graphs/train.toml (pipelines/CMakeLists.txt)
      ;
  return text;
}

const std::string& default_serve_graph() {
  static const std::string text =
#include "serve_graph.inc"  // examples/graphs/serve.toml (pipelines/CMakeLists.txt)
      ;
  return text;
}

}  // namespace zf
