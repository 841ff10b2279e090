// train_and_serve: a graph that trains a tiny GPT and, every 15 steps, pushes the new weights to
// an in-process serving engine; a stage of our own asks the engine a fixed prompt after each
// swap and prints how the answer changes as the model learns (RLHF's weight sync, in small).
//   build/examples/train_and_serve [out_dir]
#include <iostream>
#include <nlohmann/json.hpp>

#include "pipelines/graph_run.hpp"
#include "pipelines/stages_serve.hpp"
#include "pipelines/stages_train.hpp"
#include "runtime/model/model.hpp"
#include "runtime/serve/serve_client.hpp"

namespace {

std::string shown(const std::string& answer) {  // one line per answer, newlines shown as \n
  return nlohmann::json("Call me" + answer)
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// After each swap: the greedy continuation of "Call me" under the weights just served.
struct ask : zf::stage {
  zf::in_port<zf::backend_ref> backend = input<zf::backend_ref>("backend");
  zf::in_port<zf::weights_served> served = input<zf::weights_served>("served");
  std::shared_ptr<zf::serve::completion_backend> engine;
  std::string first, last;
  void start(zf::stage_context& ctx) override {
    ctx.on(backend, [this](const std::shared_ptr<const zf::backend_ref>& b) {
      engine = b->backend;
      first = answer();
      std::cout << "step  0 (weights v0): " << shown(first) << "\n";
    });
    ctx.on(served, [this](const std::shared_ptr<const zf::weights_served>& s) {
      last = answer();
      std::cout << "step " << s->step << " (weights v" << s->version << "): " << shown(last)
                << "\n";
    });
  }
  std::string answer() {
    zf::serve::completion_request r;
    r.prompt = engine->encode("Call me");
    r.max_tokens = 12;
    r.sampling.temperature = 0;
    return zf::serve::complete(*engine, r);
  }
};

}  // namespace

int main(int argc, char** argv) try {
  zf::run_config cfg;  // a tiny GPT on the embedded corpus
  cfg.model.n_layer = 2, cfg.model.n_head = 2, cfg.model.n_embd = 64, cfg.model.n_positions = 64;
  cfg.train.steps = 60, cfg.train.batch_size = 4, cfg.train.seq_len = 64, cfg.schedule.warmup = 5;
  cfg.optimizer.lr = 3e-3, cfg.eval.every = 0, cfg.train.sample_tokens = 0;
  zf::run_options o;
  o.out = argc > 1 ? argv[1] : "runs/train_and_serve";
  o.publish_every = 15;
  o.print_sample = false;

  // The engine starts from the weights training starts from (step 0).
  const zf::param_layout layout = zf::layout_of(cfg.model);
  zf::fbuffer init(layout.total);
  zf::init_params(layout, cfg.model.n_layer, uint64_t(cfg.train.seed), init.data());
  auto spec = zf::spec_of(cfg.model);
  spec.name = "learning";
  auto w0 = std::make_shared<const zf::lm_weights>(zf::make_lm_weights(spec, std::move(init)));

  zf::graph g;
  auto& train = g.add<zf::stages::train_stage>("train", cfg, o);
  auto& engine = g.add<zf::stages::engine_stage>("engine", w0, zf::open_tokenizer(cfg).first,
                                                 zf::engine_config{.max_seqs = 4});
  auto& q = g.add<ask>("ask");
  g.connect(train.weights, engine.weights, 1);  // one push in flight: training waits for a swap
  g.connect(engine.backend, q.backend);
  g.connect(engine.served, q.served);
  zf::run_graph(g);
  std::cout << "train_and_serve: the answer " << (q.last != q.first ? "changed" : "did not change")
            << " as the model learned\n";
  return q.last != q.first ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "train_and_serve: " << e.what() << "\n";
  return 1;
}
