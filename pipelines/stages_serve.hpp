#pragma once
// Serving as graph stages (pipelines/graph.hpp): an engine stage that owns a serving engine and
// a gateway stage that serves it over HTTP. `zeroflow serve` is the graph engine -> gateway;
// examples/train_and_serve connects a trainer's weights to an engine.
//   engine:  in  weights (weights_update, optional)  -> swapped in between steps
//            out backend (backend_ref)                -> offered once, at start
//            out served  (weights_served)             -> after each swap
//   gateway: in  backend (backend_ref, required)      -> starts listening
//            out listening (endpoint)                 -> the bound address and what it serves,
//                                                        once
// A gateway given a run folder also records the server there while it listens (the console's
// server charts, issue 11): metrics.jsonl, a line of the engine's figures every
// server.record_every_s seconds (runtime/serve/serve_recorder.hpp), and run.json (kind serve,
// runtime/monitor/run_status.hpp): running once it listens; finished when the run was asked to
// stop (Ctrl-C, SIGTERM: a server's clean end), failed when the backend failed or the graph
// stopped without being asked (another stage failed).
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "actors/engine.hpp"
#include "actors/gateway.hpp"
#include "pipelines/graph.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/monitor/run_status.hpp"
#include "runtime/monitor/span_log.hpp"
#include "runtime/serve/serve_recorder.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf {

struct backend_ref {  // a serving backend offered to its users
  std::shared_ptr<serve::completion_backend> backend;
};
struct weights_update {  // new weights for an engine; version 0: the served one + 1
  uint64_t version = 0;
  std::shared_ptr<const lm_weights> weights;
  int step = 0;  // the training step they come from (for reports)
};
struct weights_served {  // an engine now serves these
  uint64_t version = 0;
  int step = 0;
};
struct endpoint {
  std::string host;
  int port = 0;
  std::string model;  // the served model's name and context length
  int context = 0;
};

}  // namespace zf

ZF_MESSAGE_NAME(zf::backend_ref, "backend_ref");
ZF_MESSAGE_NAME(zf::weights_update, "weights_update");
ZF_MESSAGE_NAME(zf::weights_served, "weights_served");
ZF_MESSAGE_NAME(zf::endpoint, "endpoint");

namespace zf::stages {

// The weights an engine serves and their tokenizer, made when the stage starts.
struct served_model {
  std::shared_ptr<const lm_weights> weights;
  tokenizer tok;
};
using model_loader = std::function<served_model()>;

class engine_stage : public stage {
 public:
  in_port<weights_update> weights = input<weights_update>("weights", false);
  out_port<backend_ref> backend = output<backend_ref>("backend");
  out_port<weights_served> served = output<weights_served>("served");

  engine_stage(std::shared_ptr<const lm_weights> w, tokenizer tok, engine_config c);
  // Loads the model at start: a graph is built and checked without reading any weights.
  engine_stage(model_loader load, engine_config c) : load_(std::move(load)), c_(std::move(c)) {}
  void start(stage_context& ctx) override;
  void stop() override;

 private:
  model_loader load_;
  engine_config c_;
  std::shared_ptr<serve::completion_backend> engine_;
};

// What a gateway records of its server (see the top of this file). Off unless both run_dir and
// every_s are set.
struct record_options {
  std::string run_dir;      // the run folder ("" = no recording)
  bool fresh = false;       // run_dir is a made-up name (runs/serve-<time>): if it exists, take
                            // run_dir-2, -3, ... so two servers started in one second never share
  double every_s = 0;       // server.record_every_s (0 = no recording)
  std::string config_toml;  // the run's configuration, for run.json
  // The run's stop flag: set when the graph ends means a clean stop; nullptr: every end is
  // taken as clean unless the backend failed.
  const std::atomic<bool>* stop = nullptr;
};

class gateway_stage : public stage {
 public:
  in_port<backend_ref> backend = input<backend_ref>("backend");
  out_port<endpoint> listening = output<endpoint>("listening");

  explicit gateway_stage(actors::gateway_options o, record_options r = {});
  ~gateway_stage() override;
  void start(stage_context& ctx) override;
  void stop() override;
  // Runs until the graph stops (a server has no end of its own).
  void inputs_closed(stage_context&) override {}

 private:
  void start_recording();
  void stop_recording();
  actors::gateway_options o_;
  record_options r_;
  std::shared_ptr<serve::completion_backend> backend_;  // kept alive while the gateway runs
  std::unique_ptr<actors::gateway> gw_;
  std::unique_ptr<serve::serve_recorder> recorder_;         // metrics.jsonl
  std::unique_ptr<zf::monitor::run_status_writer> status_;  // run.json
  std::shared_ptr<zf::monitor::span_log> spans_;            // spans.jsonl: the engine's steps
  std::shared_ptr<zf::monitor::span_coalescer> steps_;
};

}  // namespace zf::stages
