#include "pipelines/pipeline.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "actors/checkpoint_writer.hpp"
#include "actors/data_sampler.hpp"
#include "actors/engine.hpp"
#include "actors/monitor.hpp"
#include "actors/optimizer_shard.hpp"
#include "actors/rank_worker.hpp"
#include "actors/rendezvous.hpp"
#include "kernels/threads.hpp"
#include "runtime/cluster/job_spec.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/launch.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/monitor/run_status.hpp"
#include "runtime/monitor/span_log.hpp"
#include "runtime/serve/serve_client.hpp"
#include "runtime/text/tokenizer.hpp"
#include "runtime/train/footprint.hpp"
#include "runtime/train/loss_scaler.hpp"
#include "runtime/train/zero.hpp"
#include "storage/blend.hpp"
#include "storage/checkpoint.hpp"
#include "storage/dataset.hpp"
#include "storage/fs_util.hpp"
#include "storage/zero_checkpoint.hpp"

namespace fs = std::filesystem;

namespace zf {

pipeline& pipeline::add(const stages::sampler& s) {
  sampler_ = s;
  return *this;
}
pipeline& pipeline::add(const stages::train& s) {
  if (s.ranks > 0) cfg_.train.ranks = s.ranks;
  if (s.zero_stage >= 0) cfg_.zero.stage = s.zero_stage;
  train_ = s;
  return *this;
}
pipeline& pipeline::add(const stages::checkpoint& s) {
  checkpoint_ = s;
  if (s.every >= 0) cfg_.checkpoint.every = s.every;
  return *this;
}
pipeline& pipeline::add(const stages::monitor& s) {
  monitor_ = s;
  return *this;
}

pipeline pretrain(const run_config& cfg) {
  pipeline p(cfg);
  p.add(stages::sampler{}).add(stages::train{}).add(stages::checkpoint{}).add(stages::monitor{});
  return p;
}

fs::path data_dir(const run_config& cfg) {
  if (!cfg.data.data_dir.empty()) return cfg.data.data_dir;
  if (const char* e = std::getenv("ZF_DATA_DIR"); e && *e) return e;
  return ZF_DEFAULT_DATA_DIR;
}

namespace {
// data.tokenizer's tokenizer.json (a folder's or the file itself); zf::error when there is none.
fs::path tokenizer_json(const run_config& cfg) {
  const fs::path p = cfg.data.tokenizer;
  const fs::path file = fs::is_directory(p) ? p / "tokenizer.json" : p;
  if (!fs::is_regular_file(file))
    fail("data.tokenizer: expected \"gpt2\" or a folder with a tokenizer.json, got {}", p.string());
  return file;
}
}  // namespace

std::string tokenizer_id(const run_config& cfg) {
  if (cfg.data.tokenizer == "gpt2") return "";
  const std::string text = storage::read_text_file(tokenizer_json(cfg));
  return fmt::format("hf{:08x}", storage::crc32_of(text.data(), text.size()));
}

// The run's tokenizer (data.tokenizer: GPT-2's files, or a Hugging Face tokenizer.json) and an
// id naming it in the corpus cache ("" for GPT-2).
std::pair<tokenizer, std::string> open_tokenizer(const run_config& cfg) {
  if (cfg.data.tokenizer == "gpt2") return {tokenizer::load_gpt2(data_dir(cfg) / "gpt2"), ""};
  tokenizer_json(cfg);  // refused by name before load_hf
  return {tokenizer::load_hf(cfg.data.tokenizer), tokenizer_id(cfg)};
}

namespace {

// A checkpoint records the data schedule at its step; a resumed run recomputes it from its own
// config. When they differ (the curriculum was edited between the runs) the run goes on with
// the configured one, and says so.
void warn_schedule_change(const data_schedule& plan, const nlohmann::json& state, int step) {
  const auto it = state.find("data");
  if (it == state.end() || !it->is_object()) return;
  const step_plan p = plan.at(step);
  const int t = it->value("seq_len", p.t), pool = it->value("pool_difficulty", p.pool_difficulty),
            keep = it->value("ltd_keep", p.ltd_keep);
  if (t == p.t && pool == p.pool_difficulty && keep == p.ltd_keep) return;
  std::cerr << fmt::format(
      "zeroflow: warning: the data schedule at step {} differs from the checkpoint's (seq_len "
      "{} -> {}, pool difficulty {} -> {}, random-LTD keep {} -> {}): continuing with the "
      "configured one\n",
      step, t, p.t, pool, p.pool_difficulty, keep, p.ltd_keep);
}

// Model config must match the checkpoint's: resuming a different shape is refused by name.
// The checkpoint's model must be this run's: every model key (but init_hf, where the weights
// came from) equal, named when not.
void check_same_model(const run_config& cfg, const std::string& ckpt_toml, const fs::path& dir) {
  run_config saved;
  apply_toml(saved, ckpt_toml, (dir / "manifest").string());
  for (const key_info& k : config_schema()) {
    if (!k.path.starts_with("model.") || k.path == "model.init_hf") continue;
    const std::string a = value_text(cfg, k.path), b = value_text(saved, k.path);
    if (a != b)
      fail("--resume {}: {} is {} in the checkpoint but {} in this run's config", dir.string(),
           k.path, b, a);
  }
}

// The text at the end of a run: "Call me" continued by the trained weights, sampled on the
// serving engine (the one decode path).
void print_sample(const run_config& cfg, fbuffer params, const tokenizer& tok, int step) {
  model_spec spec = spec_of(cfg.model);
  spec.name = "trained";
  engine_config eo;
  eo.max_seqs = 1;
  eo.prefix_caching = false;
  auto engine = actors::make_engine(make_lm_weights(spec, std::move(params)), tok, eo);
  serve::completion_request r;
  r.prompt = engine->encode("Call me");
  r.max_tokens = cfg.train.sample_tokens;
  r.sampling.temperature = 0.8f;
  r.sampling.top_k = 40;
  r.sampling.seed = static_cast<uint64_t>(cfg.train.seed);
  std::cout << "\n--- sample (step " << step << ") ---\n";
  std::cout << "Call me" << std::flush;
  serve::complete(*engine, std::move(r),
                  [](const std::string& s) { std::cout << s << std::flush; });
  std::cout << "\n---" << std::endl;
}

// The run's busy spans (the console's timeline): spans.jsonl of the lead process, or
// spans.p<rank>.jsonl of another process of an SPMD group, in the same run folder (created if
// this host does not see the lead's). Opening never throws: a log that cannot write counts it.
std::shared_ptr<monitor::span_log> open_span_log(const fs::path& out, bool lead, int rank) {
  std::error_code ec;
  fs::create_directories(out, ec);
  const std::string name = lead ? "spans.jsonl" : fmt::format("spans.p{}.jsonl", rank);
  return std::make_shared<monitor::span_log>(out / name);
}

// An actor's row on the timeline (none without a log).
actors::actor_spans spans_for(const std::shared_ptr<monitor::span_log>& log, std::string actor) {
  if (!log) return {};
  return {log, std::move(actor)};
}

// SPMD: every process resolved the resume point on its own; all must start from the same step
// (a checkpoints folder written by something else while the group started would otherwise mix
// two states silently). One all_reduce at set-up, left out of the data-plane byte counts.
void check_same_start(comm::communicator& c, int step) {
  std::vector<double> steps(static_cast<std::size_t>(c.world()), 0.0);
  steps[static_cast<std::size_t>(c.rank())] = step;
  c.all_reduce(steps.data(), steps.size());
  c.reset_bytes();
  for (int r = 0; r < c.world(); ++r)
    if (steps[static_cast<std::size_t>(r)] != step)
      fail(
          "--resume: process {} starts from step {} but process {} from step {}: the "
          "checkpoints folder changed while the group started (is another run writing it?)",
          c.rank(), step, r, steps[static_cast<std::size_t>(r)]);
}

// How the run ended, for run.json: failed with the error, interrupted (a stop), or finished.
void finish_status(monitor::run_status_writer& w, const train_result& r) {
  if (!r.error.empty())
    w.finish(monitor::run_state::failed, "training failed: " + r.error);
  else if (r.interrupted)
    w.finish(monitor::run_state::interrupted, fmt::format("stopped after step {}", r.final_step));
  else
    w.finish(monitor::run_state::finished);
}

}  // namespace

train_result pipeline::run(const run_options& o) {
  if (!sampler_) fail("pipeline: no sampler stage (add stages::sampler{{}})");
  if (!train_) fail("pipeline: no train stage (add stages::train{{}})");
  // Fine-tuning: the Hugging Face folder's config.json is the model (its weights the start).
  std::optional<hf_model> hf;
  if (!cfg_.model.init_hf.empty()) {
    hf = load_hf_model(cfg_.model.init_hf);
    const std::string from = cfg_.model.init_hf;
    cfg_.model = config_of(hf->spec);
    cfg_.model.init_hf = from;
  }
  validate(cfg_);
  kernels::set_num_threads(cfg_.train.threads);
  // SPMD: launched as one rank of a process group (RANK/WORLD_SIZE/...); one rank per process,
  // Gloo data plane, rank table through CAF. Otherwise: train.ranks threads, local backend.
  const process_env penv = read_process_env();
  const bool spmd = penv.present && penv.world > 1;
  if (spmd && cfg_.train.ranks != 1)
    fail("train.ranks: expected 1 when launched as a process group (WORLD_SIZE={}), got {}",
         penv.world, cfg_.train.ranks);
  const bool lead = !spmd || penv.rank == 0;  // reports, writes config/metrics/checkpoints
  const int world = spmd ? penv.world : cfg_.train.ranks;
  // A run the machine (and its GPU) cannot hold is refused by its keys now, not by
  // std::bad_alloc or an out-of-memory error later.
  const device where = device_of(cfg_.train);  // refused by name here without a GPU
  check_train_footprint(cfg_, world, spmd ? 1 : world, machine_memory_bytes(),
                        where == device::cuda ? kernels::gpu_free_bytes() : 0);

  // Everything that can fail on bad input runs before the first byte is written.
  const fs::path ddir = data_dir(cfg_);
  auto opened = open_tokenizer(cfg_);
  const tokenizer tok = std::move(opened.first);
  const std::string tok_id = opened.second;
  if (cfg_.model.vocab_size < tok.vocab_size())
    fail("model.vocab_size: expected at least the tokenizer's {}, got {}", tok.vocab_size(),
         cfg_.model.vocab_size);
  const fs::path ckpt_root = o.out / "checkpoints";
  std::optional<storage::loaded_checkpoint> resumed;
  const param_layout layout = layout_of(cfg_.model);
  // "auto" (what a launcher restarting a failed job passes): this run folder's checkpoint if it
  // has one, else a fresh start in it. Every process of a group decides alike: a step folder
  // appears whole (renamed into place after its manifest is fsynced) and none is committed
  // before every process has joined the group below (check_same_start says if one was).
  const std::string resume = o.resume != "auto"                   ? o.resume
                             : storage::has_checkpoint(ckpt_root) ? "latest"
                                                                  : "";
  if (!resume.empty()) {
    fs::path from = resume == "latest" ? ckpt_root : fs::path(resume);
    auto head = storage::read_manifest(from);
    check_same_model(cfg_, head.config_toml, head.dir);
    resumed = head;  // the manifest only: each rank reads its own slices below
    if (storage::has_checkpoint(ckpt_root)) {
      auto newest = storage::read_manifest(ckpt_root);
      if (newest.step > resumed->step)
        fail(
            "--resume {}: {} already has a newer checkpoint (step {}) that continuing here would "
            "overwrite; resume into a new --out DIR instead",
            resumed->dir.string(), o.out.string(), newest.step);
    }
    if (resumed->step >= cfg_.train.steps && o.resume == "auto") {
      // a restarted job whose ranks failed after the final checkpoint: it is done, not failed
      if (lead)
        std::cerr << fmt::format(
            "zeroflow: {} already finished at step {} (--resume auto): nothing left to train\n",
            o.out.string(), resumed->step);
      train_result done;
      done.first_step = done.final_step = resumed->step;
      done.last_checkpoint = resumed->dir.string();
      return done;
    }
    if (resumed->step >= cfg_.train.steps)
      fail("--resume {}: the checkpoint is at step {}, train.steps is {}: nothing to do",
           resumed->dir.string(), resumed->step, cfg_.train.steps);
  } else if (storage::has_checkpoint(ckpt_root)) {
    fail("{} already holds a run; pass --resume latest (or auto) to continue it or --out NEW_DIR",
         o.out.string());
  }
  storage::corpus_checks checks;
  checks.max_invalid_utf8 = cfg_.data.max_invalid_utf8;
  if (lead)
    checks.warn = [](const std::string& w) { std::cerr << "zeroflow: warning: " << w << "\n"; };
  fs::path shard_path = storage::prepare_data(cfg_.data, ddir, tok, tok_id, checks);
  auto data = std::make_shared<const storage::dataset>(storage::token_shard::open(shard_path),
                                                       cfg_.data.val_fraction, cfg_.train.seq_len);

  if (data->val_tokens() == 0) cfg_.eval.every = 0;  // nothing held out: no val_loss
  // The data-efficiency schedule (issue 13) and the batches it shapes: checked here, before any
  // rank starts, so a bad curriculum is refused naming its key.
  auto plan = std::make_shared<const data_schedule>(cfg_, world);
  auto batches = std::make_shared<const storage::train_batches>(
      data, plan, storage::open_pool_index(*plan, cfg_.data.curriculum, shard_path, *data, ddir),
      static_cast<uint64_t>(cfg_.train.data_seed >= 0 ? cfg_.train.data_seed : cfg_.train.seed),
      cfg_.train.batch_size, cfg_.train.grad_accum);
  if (resumed && lead) warn_schedule_change(*plan, resumed->state, resumed->step);
  const std::string toml = to_toml(cfg_);

  caf::actor_system_config sc;
  sc.set("scheduler.max-threads", 2);
  sc.set("logger.verbosity", caf::atom("quiet"));
  if (spmd) sc.load<caf::io::middleman>();
  caf::actor_system sys{sc};

  // Ranks: each a zero_rank (ZeRO stage per config) over its communicator. Any checkpoint (any
  // world size or stage) loads into any of them.
  std::vector<std::unique_ptr<comm::communicator>> comms;
  std::shared_ptr<comm::kv_store> store;
  if (spmd) {
    store = actors::open_rendezvous(sys, penv, std::chrono::seconds(120));
    comm::gloo_options go;  // a dead or frozen peer fails each survivor's collective in time
    go.op_timeout = std::chrono::seconds(cfg_.train.comm_timeout_s);
    go.timeout_key = "train.comm_timeout_s";
    comms.push_back(comm::make_gloo(penv.rank, penv.world, store, penv.iface_addr,
                                    "zf" + std::to_string(penv.master_port), go));
    check_same_start(*comms.back(), resumed ? resumed->step : 0);
  } else {
    comms = comm::make_local_group(cfg_.train.ranks);
  }
  std::vector<std::shared_ptr<zero_rank>> ranks;
  for (auto& c : comms) {
    ranks.push_back(std::make_shared<zero_rank>(spec_of(cfg_.model), cfg_.optimizer,
                                                cfg_.zero.stage, *c, where));
    ranks.back()->set_expert_parallel(cfg_.train.expert_parallel);
    ranks.back()->model().set_precision(precision_of(cfg_.train));
    ranks.back()->set_reduce_bf16(cfg_.train.reduce_dtype == "bf16");
  }
  int start = 0;
  int64_t start_tokens = -1, start_layer_tokens = -1;
  std::shared_ptr<const loss_scaler_state> start_scaler;
  for (auto& z : ranks) z->set_ltd_layers(plan->ltd_layers());
  {
    std::vector<float> init;
    const float *p = nullptr, *m = nullptr, *v = nullptr;
    if (resumed) {
      start = resumed->step;
      start_tokens = resumed->state.value("tokens", int64_t(-1));
      start_layer_tokens = resumed->state.value("layer_tokens", int64_t(-1));
      start_scaler = scaler_state_of(resumed->state);
      storage::load_ranks(ranks, resumed->dir, layout);  // each reads only what it holds
    } else if (hf) {
      p = hf->flat.data();
    } else {
      init.resize(layout.total);
      init_params(layout, cfg_.model.n_layer, static_cast<uint64_t>(cfg_.train.seed), init.data());
      p = init.data();
    }
    if (p)
      for (auto& z : ranks) z->import_state(p, m, v);  // resumed: loaded above
    resumed.reset();                                   // the ranks hold their copies now
    hf.reset();
  }
  // run.json says "running" from here to the end (the lead's; a throw below writes failed)
  std::unique_ptr<monitor::run_status_writer> status;
  if (lead) {  // only now: a checkpoint that fails to load leaves the run folder as it was
    fs::create_directories(o.out);
    storage::write_file_atomic(o.out / "config.toml", to_toml(cfg_));
    status = std::make_unique<monitor::run_status_writer>(o.out, "train", toml, cfg_.train.steps);
  }
  // Timeline rows: ranks by global rank; a process's single actors (sampler, checkpoint_writer)
  // suffixed with its process rank outside the lead, so the group's files merge without clashes.
  std::shared_ptr<monitor::span_log> spans;
  if (monitor_) spans = open_span_log(o.out, lead, penv.rank);
  const std::string single = lead ? "" : fmt::format(".p{}", penv.rank);

  auto result = std::make_shared<train_result>();
  {
    actors::trainer_setup ts;
    ts.loop = loop_options_of(cfg_);
    ts.loop.start_step = start;
    ts.loop.data_plan = plan;
    ts.loop.start_tokens = start_tokens;
    ts.loop.start_layer_tokens = start_layer_tokens;
    ts.loop.start_scaler = start_scaler;
    ts.loop.process_rank = spmd ? penv.rank : 0;
    ts.loop.process_world = spmd ? penv.world : 1;
    ts.loop.stop = o.stop;
    ts.loop.stop_at_step = o.stop_at_step;
    ts.loop.memory = ranks[0]->memory();
    ts.loop.comm_bytes = [z = ranks[0]] { return z->bytes_communicated(); };
    if (o.publish_every > 0 && o.on_weights) {
      if (spmd) fail("publishing weights (run_options.publish_every) needs thread ranks");
      ts.loop.after_step = [&, spec = spec_of(cfg_.model)](int step) {
        if (step % o.publish_every != 0) return;
        fbuffer p(layout.total);  // the ranks' owned slices cover every parameter
        for (auto& z : ranks) z->export_state(p.data(), nullptr, nullptr);
        o.on_weights(step, std::make_shared<const lm_weights>(make_lm_weights(spec, std::move(p))));
      };
    }
    // The cluster tests' failures on cue (runtime/cluster/job_spec.hpp, ZF_FAULT_EXIT).
    if (auto fault = cluster::injected_fault_for(penv.rank, std::getenv("ZF_FAULT_EXIT"),
                                                 std::getenv("ZF_ATTEMPT"))) {
      ts.loop.after_step = [f = *fault, next = ts.loop.after_step](int step) {
        if (next) next(step);
        if (step != f.step) return;
        if (f.code < 0) ::raise(SIGKILL);
        std::_Exit(f.code);
      };
    }
    ts.sampler = actors::spawn_data_sampler(sys, batches, spans_for(spans, "sampler" + single));
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const std::string g = std::to_string(spmd ? penv.rank : static_cast<int>(i));
      ts.workers.push_back(actors::spawn_rank_worker(sys, ranks[i], spans_for(spans, "rank" + g)));
      ts.shards.push_back(
          actors::spawn_optimizer_shard(sys, ranks[i], spans_for(spans, "optimizer" + g)));
    }
    if (checkpoint_) {  // one data file per rank, written in parallel; rank 0's process commits
      storage::commit_group g;
      if (spmd) g.store = store, g.rank = penv.rank, g.world = penv.world;
      ts.writer = actors::spawn_checkpoint_writer(
          sys, storage::checkpoint_committer(ckpt_root, layout, cfg_.checkpoint.keep, g), toml,
          spans_for(spans, "checkpoint_writer" + single));
    }
    if (monitor_ && lead) {
      actors::monitor_options mo;
      mo.metrics_file = o.out / "metrics.jsonl";
      if (cfg_.monitor.tensorboard) mo.tensorboard_dir = o.out;
      if (o.observer)
        mo.observer = o.observer;
      else if (!monitor_->quiet && !o.quiet)
        mo.observer = std::make_shared<progress_printer>(::isatty(STDERR_FILENO), 10);
      ts.monitor = actors::spawn_monitor(sys, mo);
    }
    std::vector<caf::actor> others{caf::actor_cast<caf::actor>(ts.sampler)};
    for (auto& w : ts.workers) others.push_back(caf::actor_cast<caf::actor>(w));
    for (auto& sh : ts.shards) others.push_back(caf::actor_cast<caf::actor>(sh));
    if (ts.writer) others.push_back(caf::actor_cast<caf::actor>(ts.writer));
    if (ts.monitor) others.push_back(caf::actor_cast<caf::actor>(ts.monitor));
    if (monitor_ && !monitor_->quiet && !o.quiet && lead)
      std::cerr << fmt::format(
          "zeroflow: {} parameters, {} tokens (train {} / val {}), {} steps from step {}, {} "
          "rank(s) ({}) at ZeRO stage {} -> {}\n",
          layout.total, data->train_tokens() + data->val_tokens(), data->train_tokens(),
          data->val_tokens(), cfg_.train.steps, start, world, spmd ? "processes, gloo" : "threads",
          cfg_.zero.stage, o.out.string());
    auto trainer = actors::spawn_trainer(sys, std::move(ts));
    others.push_back(caf::actor_cast<caf::actor>(trainer));
    caf::scoped_actor self{sys};
    self->request(trainer, caf::infinite, actors::run_atom::value)
        .receive([&](train_result& r) { *result = std::move(r); },
                 [&](caf::error& e) { result->error = "trainer: " + sys.render(e); });
    // stop the stage actors and wait until each is gone: they hold the ranks, which hold the
    // communicators, which must go before the rendezvous store
    for (auto& a : others) {
      self->monitor(a);
      self->send_exit(a, caf::exit_reason::user_shutdown);
    }
    for (std::size_t i = 0; i < others.size(); ++i) self->receive([](const caf::down_msg&) {});
  }
  if (spans) spans->flush();  // every spanning actor is gone: the file is whole
  if (status) finish_status(*status, *result);
  const bool sample = lead && o.print_sample && cfg_.train.sample_tokens > 0 &&
                      !result->interrupted && result->error.empty();
  fbuffer final_params(sample ? layout.total : 0);
  if (sample) {  // the trained weights, assembled from the ranks' partitions
    if (spmd) {
      auto ck = storage::load_checkpoint(ckpt_root, layout);
      std::copy(ck.params.begin(), ck.params.end(), final_params.data());
    } else
      for (auto& z : ranks) z->export_state(final_params.data(), nullptr, nullptr);
  }
  ranks.clear();
  comms.clear();  // before the actor system: a Gloo group and the writer hold the CAF store
  store.reset();
  if (!result->error.empty()) fail("training failed: {}", result->error);
  if (sample) print_sample(cfg_, std::move(final_params), tok, result->final_step);
  return *result;
}

}  // namespace zf
