// Weight updates from training into serving, through the graph: a trainer pushes its weights
// every 5 steps to an in-process engine (pipelines/stages_train + stages_serve). After each
// push the engine's greedy answer equals a fresh engine's on the checkpoint of the same step,
// and every token of it came from one weights version, the one just pushed.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>

#include "pipelines/graph_run.hpp"
#include "pipelines/stages_serve.hpp"
#include "pipelines/stages_train.hpp"
#include "runtime/model/model.hpp"
#include "storage/lm_loader.hpp"
#include "test_util.hpp"

using namespace zf;

namespace {

struct answer {
  int step = 0;
  uint64_t version = 0;
  std::vector<int> tokens;
  std::vector<uint64_t> token_versions;
};

// Greedy tokens of a fixed prompt and the weights version of every event that carried them.
answer ask(serve::completion_backend& b, const std::vector<int>& prompt) {
  serve::completion_request r;
  r.prompt = prompt;
  r.max_tokens = 10;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  answer a;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  auto s = b.submit(r, [&](const serve::completion_event& e) {
    std::lock_guard lk(mu);
    for (int t : e.tokens) a.tokens.push_back(t), a.token_versions.push_back(e.weights_version);
    if (e.finish != serve::finish_reason::none) done = true;
    cv.notify_all();
  });
  REQUIRE(s.status == 200);
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return done; });
  return a;
}

struct recorder : stage {
  in_port<backend_ref> backend = input<backend_ref>("backend");
  in_port<weights_served> served = input<weights_served>("served");
  std::shared_ptr<serve::completion_backend> engine;
  std::vector<int> prompt{464, 6450, 318};  // "The whale is"
  std::vector<answer> answers;
  answer before;
  void start(stage_context& ctx) override {
    ctx.on(backend, [this](const std::shared_ptr<const backend_ref>& b) {
      engine = b->backend;
      before = ask(*engine, prompt);  // the initial weights (version 0)
    });
    ctx.on(served, [this](const std::shared_ptr<const weights_served>& s) {
      answer a = ask(*engine, prompt);
      a.step = s->step;
      a.version = s->version;
      answers.push_back(std::move(a));
    });
  }
};

}  // namespace

TEST_CASE("train and serve: each pushed version answers as a fresh engine on that checkpoint") {
  testing::temp_dir d("tas");
  run_config cfg;
  cfg.model.n_layer = 2, cfg.model.n_head = 2, cfg.model.n_embd = 32, cfg.model.n_positions = 32;
  cfg.train.steps = 15, cfg.train.batch_size = 4, cfg.train.seq_len = 32, cfg.schedule.warmup = 2;
  cfg.optimizer.lr = 3e-3, cfg.eval.every = 0, cfg.train.sample_tokens = 0;
  cfg.checkpoint.every = 5, cfg.train.threads = 1, cfg.train.ranks = 2;
  cfg.zero.stage = 3;  // the pushed weights are gathered from both ranks' shards
  cfg.data.data_dir = ZF_DATA_DIR;
  run_options o;
  o.out = d.path / "run";
  o.publish_every = 5;
  o.print_sample = false;
  const param_layout layout = layout_of(cfg.model);
  fbuffer init(layout.total);
  init_params(layout, cfg.model.n_layer, uint64_t(cfg.train.seed), init.data());
  auto w0 =
      std::make_shared<const lm_weights>(make_lm_weights(spec_of(cfg.model), std::move(init)));

  graph g;
  auto& train = g.add<stages::train_stage>("train", cfg, o);
  auto& engine = g.add<stages::engine_stage>("engine", w0, open_tokenizer(cfg).first,
                                             engine_config{.max_seqs = 4});
  auto& rec = g.add<recorder>("check");
  g.connect(train.weights, engine.weights, 1);
  g.connect(engine.backend, rec.backend);
  g.connect(engine.served, rec.served);
  run_graph(g);

  REQUIRE(rec.answers.size() == 3);
  for (std::size_t i = 0; i < rec.answers.size(); ++i) {
    const answer& a = rec.answers[i];
    CAPTURE(a.step);
    CHECK(a.step == 5 * int(i + 1));
    CHECK(a.version == i + 1);
    REQUIRE(a.tokens.size() == 10);
    for (uint64_t v : a.token_versions) CHECK(v == a.version);  // no mixing of versions
    const auto dir = o.out / "checkpoints" / fmt::format("step-{:06d}", a.step);
    auto fresh_w = storage::load_checkpoint_model(dir);
    auto fresh = actors::make_engine(std::move(fresh_w.weights), open_tokenizer(cfg).first,
                                     engine_config{.max_seqs = 4});
    CHECK(ask(*fresh, rec.prompt).tokens == a.tokens);
  }
  CHECK(rec.before.token_versions == std::vector<uint64_t>(10, 0));
  CHECK(rec.before.tokens != rec.answers[2].tokens);  // the pushes changed what it answers
}
