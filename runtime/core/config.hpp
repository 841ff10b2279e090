#pragma once
// The run configuration: small typed structs, one per component (model, train, optimizer,
// schedule, zero, checkpoint, eval, monitor, data, engine, server), one TOML table each, read from
// TOML, `--set key=value` overrides and the subcommands' flags, validated once before any work
// starts. Every key is declared once in config.cpp (path, type: integer, number, string, bool,
// enum, list of strings or of integers, data.sources; range or choices; help) and that one schema
// drives parsing, validation, the generated command-line flags and `zeroflow config`, so they can
// never disagree. Errors name the key path, what was expected and what was given. Keys that moved
// (train.lr -> optimizer.lr, train.zero.stage -> zero.stage, ...: renamed_keys()) are still read
// under their old paths, since earlier config files and checkpoints name them so.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace zf {

// Mixture-of-Experts blocks, `model.moe.*` (runtime/core/model_spec.hpp moe_spec, docs/moe.md).
struct moe_config {
  int num_experts = 0;  // 0: a dense model
  int top_k = 2;
  int interval = 1;                    // MoE layers: those with (l + 1) % interval == 0 ...
  std::vector<int64_t> layers;         // ... or exactly these layer ids
  std::vector<int64_t> layer_experts;  // experts of each MoE layer in order (PR-MoE); [] = all
  int expert_intermediate = 0;         // 0 = model.intermediate
  double capacity_factor = 1.25, eval_capacity_factor = 2.0;
  int min_capacity = 4;
  bool dropless = false;
  std::string router = "softmax";  // softmax | sigmoid
  bool norm_topk = true;
  bool residual = false;  // PR-MoE: a dense MLP beside the experts
  double aux_loss_coef = 0.01, z_loss_coef = 0.001;
  double bias_update_rate = 0.0;  // DeepSeek-V3's auxiliary-loss-free bias; 0 = none
  double jitter = 0.0;            // Switch's router input jitter (training)
  double gate_scale = 1.0;        // DeepSeek's routed_scaling_factor
};

struct model_config {
  std::string arch = "gpt2";  // gpt2 | llama (runtime/core/model_spec.hpp)
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 256;
  int n_positions = 256;  // max context (GPT-2: the learned position table)
  int vocab_size = 50257;
  int n_kv_head = 0;     // llama: grouped-query attention; 0 = n_head
  int head_dim = 0;      // 0 = n_embd / n_head
  int intermediate = 0;  // MLP width; 0 = 4 n_embd (gpt2), 8/3 n_embd rounded up to 32 (llama)
  double norm_eps = 1e-5;
  double rope_theta = 10000;
  std::string rope_type = "none";  // none | linear | llama3
  double rope_factor = 1, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int rope_original_max_positions = 0;
  bool tied_head = true;
  bool attn_bias = false;   // llama: biases on q/k/v/o
  bool value_head = false;  // a scalar head (reward models, PPO critics)
  // A Hugging Face folder to fine-tune: its config.json replaces the keys above and its weights
  // are the initial parameters ("" = random initialisation from train.seed).
  std::string init_hf;
  moe_config moe;
};

// random-LTD (arXiv 2211.11586), `train.random_ltd.*`: the listed layers (default all but the
// first and last) see a random subset of each sequence's tokens, from min_tokens up to the full
// train.seq_len linearly over total_steps in multiples of step_size; dropped tokens bypass the
// layer unchanged (runtime/train/curriculum: ltd_schedule, ltd_layers).
struct random_ltd_config {
  bool enabled = false;
  std::vector<int64_t> layers;  // layer ids; [] = all but the first and the last
  int min_tokens = 0;           // kept tokens at step 0; 0 = train.seq_len / 2
  int64_t total_steps = 0;      // steps to reach the full sequence; 0 = train.steps / 2
  int step_size = 16;           // kept tokens move in multiples of this
};

// The step loop: how long, how much data per step, which seed, how many ranks.
// fp16's dynamic loss scaling (DeepSpeed's fp16 section, DynamicLossScaler's semantics).
struct fp16_config {
  double loss_scale = 0;         // 0: dynamic; > 0: this fixed scale
  int initial_scale_power = 16;  // dynamic: the first scale is 2^this
  int loss_scale_window = 1000;  // steps without overflow before the scale doubles
  int hysteresis = 2;            // overflows the scale survives before it halves
  double min_loss_scale = 1;     // an overflow at this scale fails the run
};

struct train_config {
  // Compute precision of the GEMMs (kernels/gemm_lib.hpp): fp32, or bf16 / fp16 mixed precision
  // (fp32 master weights, gradients, Adam moments and reductions; fp16 with loss scaling).
  std::string precision = "fp32";
  // The dtype gradients travel and are summed in between data-parallel ranks: fp32, or bf16
  // (half the bytes; DeepSpeed's communication_data_type, FSDP2's reduce_dtype).
  std::string reduce_dtype = "fp32";
  // Where each rank keeps its model, gradients and AdamW state and runs its kernels: cpu, or
  // cuda (one rank on the GPU at zero.stage 0 for now; kernels/dispatch.hpp's cuda device).
  std::string device = "cpu";
  fp16_config fp16;
  int steps = 600;
  int batch_size = 8;
  int seq_len = 128;
  int grad_accum = 1;  // micro-batches per optimizer step
  int64_t seed = 1337;
  int64_t data_seed = -1;  // the batches' order (and MoE router jitter); -1 = seed
  int prefetch = 2;        // batches the sampler may run ahead
  int threads = 0;         // compute threads; 0: all cores
  int ranks = 1;           // data-parallel ranks (threads of this process, local backend)
  int sample_tokens = 64;  // tokens of text generated at the end of a run; 0: none
  // Seconds one collective between processes (Gloo) may wait for its peers: a rank that died or
  // froze becomes an error naming this key in the survivors instead of a hang.
  int comm_timeout_s = 60;
  // > 0: the run's length in tokens (seqlen warm-up, arXiv 2108.06084): it ends after the step
  // that reaches this many; train.steps stays an upper bound (validate checks it can be reached).
  int64_t tokens = 0;
  random_ltd_config random_ltd;
  // MoE models: ranks per expert group; each computes num_experts / expert_parallel experts of
  // every MoE layer for the group's tokens (runtime/model/moe_parallel). Divides the ranks.
  int expert_parallel = 1;
};

// AdamW (torch.optim.AdamW semantics) and global-norm clipping.
struct optimizer_config {
  double lr = 2e-3;  // peak learning rate
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;  // max global grad norm; 0 disables clipping
};

// The learning-rate schedule over train.steps: linear warm-up, then cosine to min_lr_ratio * lr.
// decay_by: what the cosine decay counts: optimizer steps (of train.steps), tokens (of
// train.tokens, or train.steps full steps' worth) or layer-tokens (LayerToken, arXiv 2211.11586:
// tokens times the layers that saw them, which random-LTD lowers). Warm-up is in steps always.
struct schedule_config {
  int warmup = 40;
  double min_lr_ratio = 0.1;
  std::string decay_by = "steps";  // steps | tokens | layer_tokens
};

struct zero_config {
  int stage = 0;  // 0 DP, 1 +optimizer state, 2 +gradients, 3 +parameters sharded
};

struct checkpoint_config {
  int every = 100;  // steps between checkpoints; 0: only at the end
  int keep = 3;     // step folders kept on disk
};

struct eval_config {
  int every = 50;  // steps between validation passes; 0: never
  int batches = 8;
};

// What a training run writes for watching it besides metrics.jsonl (actors/monitor).
struct monitor_config {
  bool tensorboard = false;  // also a TensorBoard event file in the run folder
};

// One difficulty metric's curriculum, `data.curriculum.<metric>.*` (runtime/train/curriculum:
// pacing_config, difficulty_at). seqlen: the difficulty is the sequence length (value type
// only); vocab_rarity and custom: difficulty_type value keeps samples whose metric value is at
// most the difficulty, percentile the easiest difficulty% of them, by the index `zeroflow data
// analyze` wrote (index: its --out folder; "" = <data_dir>/index).
struct metric_curriculum {
  bool enabled = false;
  std::string difficulty_type = "value";  // value | percentile
  std::string pacing = "fixed_linear";    // fixed_linear | fixed_root | fixed_discrete
  int min_difficulty = 0, max_difficulty = 0;
  int64_t total_steps = 0;  // steps from min to max difficulty
  int difficulty_step = 1;  // difficulties move in multiples of this (seqlen: 8 keeps GEMMs even)
  int root_degree = 2;      // fixed_root
  std::vector<int64_t> difficulties;  // fixed_discrete: difficulty i up to max_steps[i]
  std::vector<int64_t> max_steps;     // fixed_discrete: one fewer than difficulties
  std::string index;                  // vocab_rarity / custom: the analyzer's folder
};

// Several metrics combine as in DeepSpeed: seqlen shortens the windows, a rarity (or custom)
// pool restricts which windows are drawn.
struct curriculum_config {
  metric_curriculum seqlen, vocab_rarity, custom;
  // truncate: b rows of `difficulty` tokens (fewer tokens per step); reshape: the step's
  // b * seq_len tokens packed into rows of `difficulty` (DeepSpeed's seqlen_reshape).
  std::string seqlen_mode = "truncate";
};

// One corpus of a blend (data.sources): a name or path as data.corpus takes it, and its weight.
struct data_source {
  std::string path;
  double weight = 1;
};

struct data_config {
  std::string corpus = "moby-dick";  // "moby-dick" (embedded default), a .txt file or a .tok shard
  std::string tokenizer = "gpt2";    // "gpt2", or a folder (or file) with a tokenizer.json
  std::string data_dir;  // where scripts/setup put the corpus and tokenizer; "" = build default
  double val_fraction = 0.05;
  // Largest share of a text corpus's bytes that may be invalid UTF-8 or NUL before it is refused
  // as not text (a binary file trains on noise); 1 accepts anything.
  double max_invalid_utf8 = 0.01;
  // Non-empty: these corpora blended by weight into one token shard (storage/blend) instead of
  // data.corpus; deterministic by blend_seed, so every training seed sees the same blend.
  std::vector<data_source> sources;
  int64_t blend_seed = 1234;
  curriculum_config curriculum;
};

// The serving engine (actors/engine): scheduling policy, batch and KV pool sizes.
struct engine_config {
  std::string policy = "split_fuse";  // split_fuse | static_batch
  int token_budget = 256;             // tokens per forward pass
  int max_seqs = 64;                  // running sequences at most
  int block_size = 16;                // tokens per KV block
  int kv_blocks = 0;                  // KV blocks in the pool; 0: automatic
  int max_queue = 256;                // waiting requests before 429
  int threads = 0;                    // compute threads; 0: all cores
  bool prefix_caching = true;         // share KV blocks of common prompt prefixes
  bool batch_invariant = false;       // logits independent of batching (score-mode bits)
  std::string dtype = "fp32";         // fp32 | bf16: projections and head (runtime/model/lm_bf16)
  std::string device = "cpu";         // cpu | cuda: weights, KV pool and forward on the GPU
  std::string kv_dtype = "auto";      // auto (bf16 with dtype bf16) | fp32 | bf16: KV cache rows
};

// The HTTP server (actors/gateway).
struct server_config {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8000;                 // 0: any free port
  int io_threads = 2;
  bool enable_weight_updates = false;  // POST /v1/update_weights_from_disk off loopback too
  std::vector<std::string> api_keys;   // non-empty: requests need Authorization: Bearer <key>
  std::string api_key_file;            // more keys, one per line ("" = none)
  bool protect_metrics = false;        // /metrics needs a key too
  // Limits against slow, idle and greedy clients (see actors/gateway.hpp and README "Security").
  int prepare_threads = 2;           // threads that parse and tokenize requests
  int max_connections = 512;         // request slots
  int overflow_connections = 64;     // over them: /health and /metrics only
  int max_body_bytes = 1 << 20;      // larger bodies: 413
  int max_prompt_bytes = 256 << 10;  // longer prompts: 400 before tokenizing
  int header_timeout_s = 10;         // request headers; idle keep-alive connections
  int read_timeout_s = 60;           // a request body
  int write_timeout_s = 30;          // a write making no progress drops the client
  int max_output_bytes = 4 << 20;    // queued stream bytes per connection
  // The serve recorder (runtime/serve/serve_recorder.hpp): a line of figures in the run folder's
  // metrics.jsonl every this many seconds; 0: no recording (no run folder).
  double record_every_s = 1.0;
};

// RLHF (`zeroflow sft | reward | ppo | grpo | rloo`, runtime/rl): where prompts come from, how
// rollouts are generated, the objective's coefficients and how far rollouts may run ahead.
struct rlhf_config {
  std::string algorithm = "grpo";  // grpo | rloo | ppo (the subcommand sets it)
  std::string task = "reverse";    // built-in task (runtime/rl/tasks) when no prompts file
  int task_min_len = 3, task_max_len = 5;
  std::string prompts;          // JSON-lines prompts file ("" = the task's generator)
  std::string sft_data;         // JSON-lines SFT pairs for the warm-up ("" = the task's)
  std::string reward_model;     // a reward model checkpoint folder ("" = none)
  std::string preference_data;  // JSON-lines preference pairs for `reward` ("" = the task's)
  int rm_steps = 300;           // reward model training steps
  double rm_lr = 1e-3;
  int rm_batch = 64;        // preference pairs per reward model step
  double rm_center = 0.01;  // keeps reward model scores near 0 (TRL's center_rewards_coefficient)
  double rule_reward = 1;   // weight of the task's rule reward (0: reward model only)
  int steps = 100;          // policy updates
  int prompts_per_step = 16;
  int group_size = 8;  // completions per prompt (GRPO, RLOO; PPO may use 1)
  int max_new_tokens = 8;
  double temperature = 1.0;
  int overlap = 0;                  // rollouts for step n+k run while step n trains (0: sync)
  double lr = 2e-3;                 // policy learning rate (constant, AdamW of optimizer.*)
  int warmup = 10;                  // updates of linear lr warm-up (Adam\'s first steps are large)
  double critic_lr = 2e-3;          // PPO's critic
  double kl_coef = -1;              // <0: the algorithm's default (grpo 0.04, rloo 0.05, ppo 0.1)
  std::string kl_estimator = "k3";  // GRPO's in-loss estimator: k1 | k2 | k3
  double clip_low = 0.2, clip_high = 0.2;        // PPO/GRPO ratio clip; DAPO raises clip_high
  std::string loss_agg = "seq_mean_token_mean";  // | token_mean | seq_mean_token_sum_norm
  bool scale_by_std = true;                      // GRPO advantages divided by the group's std
  double is_cap = 2;                // truncated importance-sampling cap for stale rollouts
  double gamma = 1, lambda = 0.95;  // PPO's GAE
  double value_clip = 0.2, reward_clip = 5;
  double ema = 0;        // PPO: EMA of the policy's weights (0.992), 0 = off
  double ptx_coef = 0;   // PPO: weight of an SFT (pretraining) loss mixed in
  int ppo_epochs = 1;    // passes over each rollout batch
  int micro_batch = 0;   // sequences per forward/backward; 0 = all at once
  int sft_steps = 1000;  // warm-up SFT steps of a policy trained from scratch
  int sft_batch = 32;
  double sft_lr = 3e-3;
  // Share of a task's warm-up demonstrations that are wrong (a plausible wrong answer of the
  // right length): demonstrations are imperfect, and the rule reward is what tells the policy
  // which of its learned answers is right. Only for task-generated SFT data.
  double sft_noise = 0.5;
  int engine_threads = 1;  // rollout engine compute threads
  // local: the engine is an actor of the trainer's process; process: a process of its own
  // (actors/engine_remote), weights pushed over Gloo in buckets of sync_bucket_mb MiB.
  std::string rollout_placement = "local";
  int sync_bucket_mb = 32;
  int engines = 1;          // rollout engines; requests go round-robin, weights to all
  int engine_restarts = 0;  // engines that die replaced so often in a run (0: the run stops)

  int eval_prompts = 64;  // held-out prompts scored greedily at the start and end
};

struct run_config {
  model_config model;
  train_config train;
  optimizer_config optimizer;
  schedule_config schedule;
  zero_config zero;
  checkpoint_config checkpoint;
  eval_config eval;
  monitor_config monitor;
  data_config data;
  engine_config engine;
  server_config server;
  rlhf_config rlhf;
};

// The schema, as the command line and documentation see it. list: strings; integer_list:
// integers, each in lo..hi (TOML [1, 2], --set 1,2 or [1,2]); source_list: data.sources (TOML
// [{path = "a", weight = 2}], --set a:2,b: split at the last ':', weight 1 when left out).
enum class key_kind { integer, number, string, boolean, choice, list, integer_list, source_list };
struct key_info {
  std::string path;  // "engine.token_budget"
  key_kind kind;
  std::string help;                  // one line
  std::vector<std::string> choices;  // choice keys
  double lo = 0, hi = 0;             // integer / number ranges (inclusive)
};
const std::vector<key_info>& config_schema();
// Old key path -> the path it moved to (accepted by apply_toml and apply_override).
const std::vector<std::pair<std::string, std::string>>& renamed_keys();
// The TOML text of one key's value in cfg (its default when cfg is default-constructed).
std::string value_text(const run_config& cfg, const std::string& path);

// Parses TOML text (source names the file in messages) over the defaults in cfg.
void apply_toml(run_config& cfg, const std::string& toml_text, const std::string& source);
// Applies one "key=value" override (from --set).
void apply_override(run_config& cfg, const std::string& assignment);
// Throws zf::error "<key>: expected <range>, got <value>" for the first bad value.
void validate(const run_config& cfg);
// The whole configuration as TOML (round-trips through apply_toml).
std::string to_toml(const run_config& cfg);
struct model_spec;
// The model spec a run's `model.*` keys describe (defaults resolved, checked), and back: the
// keys describing a spec (init_hf left empty).
model_spec spec_of(const model_config& m);
model_config config_of(const model_spec& s);

// Loads file (if not empty), applies overrides, validates.
run_config load_config(const std::string& file, const std::vector<std::string>& overrides);

}  // namespace zf
