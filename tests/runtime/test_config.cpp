// Run configuration: defaults, TOML round trip, --set overrides and the messages of every refusal
// (each names the key, what was expected and what was given).
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <string_view>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_spec.hpp"
#include "test_util.hpp"

namespace {

using zf::testing::contains;
using zf::testing::error_of;

}  // namespace

TEST_CASE("config: defaults validate") {
  zf::run_config cfg;
  CHECK_NOTHROW(zf::validate(cfg));
  CHECK(cfg.model.n_embd % cfg.model.n_head == 0);
  CHECK(cfg.train.seq_len <= cfg.model.n_positions);
  // load_config with no file and no overrides is exactly the defaults
  zf::run_config loaded = zf::load_config("", {});
  CHECK(zf::to_toml(loaded) == zf::to_toml(cfg));
}

TEST_CASE("config: to_toml round-trips through apply_toml") {
  zf::run_config a;
  a.model.n_layer = 3;
  a.model.n_head = 2;
  a.model.n_embd = 64;
  a.model.n_positions = 96;
  a.model.vocab_size = 1000;
  a.train.steps = 1234;
  a.optimizer.lr = 3.7e-4;
  a.schedule.min_lr_ratio = 0.25;
  a.optimizer.eps = 1e-10;
  a.optimizer.beta2 = 0.999;
  a.optimizer.grad_clip = 0.0;
  a.optimizer.weight_decay = 10.0;  // a whole-number double must still read back as a float
  a.train.seed = 42;
  a.train.seq_len = 96;
  a.data.corpus = "dir with space/my \"quoted\" corpus\\x.txt";
  a.data.data_dir = "/tmp/zf data";
  a.data.val_fraction = 0.125;
  REQUIRE_NOTHROW(zf::validate(a));

  const std::string text = zf::to_toml(a);
  zf::run_config b;  // defaults, then overwritten by every key
  REQUIRE_NOTHROW(zf::apply_toml(b, text, "roundtrip.toml"));
  CHECK(zf::to_toml(b) == text);
  CHECK(b.model.n_layer == 3);
  CHECK(b.model.n_embd == 64);
  CHECK(b.train.steps == 1234);
  CHECK(b.optimizer.lr == a.optimizer.lr);  // exact: fmt prints the shortest round-trip form
  CHECK(b.optimizer.eps == a.optimizer.eps);
  CHECK(b.optimizer.weight_decay == 10.0);
  CHECK(b.optimizer.grad_clip == 0.0);
  CHECK(b.train.seed == 42);
  CHECK(b.data.corpus == a.data.corpus);
  CHECK(b.data.data_dir == a.data.data_dir);
  CHECK(b.data.val_fraction == 0.125);

  // The defaults round-trip too.
  zf::run_config d, e;
  e.optimizer.lr = 1;  // make sure apply_toml really overwrites
  zf::apply_toml(e, zf::to_toml(d), "defaults.toml");
  CHECK(zf::to_toml(e) == zf::to_toml(d));
  CHECK(e.optimizer.lr == d.optimizer.lr);
}

TEST_CASE("config: a seed above 2^53 survives --set and the TOML round trip") {
  // Regression test (bug fixed): (runtime/core/config.cpp,
  // set_number/set_from_toml/apply_override): every numeric value, integers included, passes
  // through a double, so train.seed values above 2^53 (declared valid up to 9.2e18) are silently
  // rounded: 1234567890123456789 becomes 1234567890123456768, and to_toml -> apply_toml no longer
  // round-trips. Fix: parse 'i' keys as int64_t (from_chars into int64_t; n.value<int64_t>() from
  // TOML) and range-check in the integer domain.
  const int64_t big = 1234567890123456789;
  zf::run_config a;
  a.train.seed = big;
  zf::run_config b;
  zf::apply_toml(b, zf::to_toml(a), "seed.toml");
  CHECK(b.train.seed == big);
  zf::run_config c;
  zf::apply_override(c, "train.seed=1234567890123456789");
  CHECK(c.train.seed == big);
}

TEST_CASE("config: unknown TOML key names the key and the source") {
  zf::run_config cfg;
  auto msg = error_of([&] { zf::apply_toml(cfg, "[train]\nfoo = 1\n", "my_run.toml"); });
  CHECK(contains(msg, "unknown config key 'train.foo'"));
  CHECK(contains(msg, "my_run.toml"));
  // a top-level unknown key too
  msg = error_of([&] { zf::apply_toml(cfg, "bogus = true\n", "top.toml"); });
  CHECK(contains(msg, "unknown config key 'bogus'"));
  CHECK(contains(msg, "top.toml"));
}

TEST_CASE("config: out-of-range value names key, range and the given value") {
  zf::run_config cfg;
  auto msg = error_of([&] { zf::apply_toml(cfg, "[optimizer]\nlr = -1\n", "lr.toml"); });
  CHECK(contains(msg, "optimizer.lr: expected"));
  CHECK(contains(msg, "got -1"));
  CHECK(cfg.optimizer.lr == zf::optimizer_config{}.lr);  // not applied

  msg = error_of([&] { zf::apply_toml(cfg, "[model]\nn_layer = 0\n", "layers.toml"); });
  CHECK(contains(msg, "model.n_layer: expected 1..256, got 0"));

  // validate() catches values set directly on the struct
  zf::run_config direct;
  direct.train.batch_size = 0;
  msg = error_of([&] { zf::validate(direct); });
  CHECK(contains(msg, "train.batch_size: expected 1..65536, got 0"));
}

TEST_CASE("config: NaN is refused for a float key") {
  // Regression test (bug fixed): (runtime/core/config.cpp, check_range): `v < k.lo || v > k.hi` is
  // false for NaN, so
  // `--set optimizer.lr=nan` (from_chars accepts "nan") and TOML `lr = nan` are accepted, and
  // validate() passes a NaN lr. Fix: `if (!(v >= k.lo && v <= k.hi)) fail(...)`.
  zf::run_config cfg;
  auto msg = error_of([&] { zf::apply_override(cfg, "optimizer.lr=nan"); });
  CHECK(contains(msg, "optimizer.lr"));
  zf::run_config t;
  msg = error_of([&] { zf::apply_toml(t, "[optimizer]\nlr = nan\n", "nan.toml"); });
  CHECK(contains(msg, "optimizer.lr"));
  zf::run_config direct;
  direct.optimizer.weight_decay = std::nan("");
  msg = error_of([&] { zf::validate(direct); });
  CHECK(contains(msg, "optimizer.weight_decay"));
  // infinity is refused (this part works)
  zf::run_config inf;
  msg = error_of([&] { zf::apply_override(inf, "optimizer.lr=inf"); });
  CHECK(contains(msg, "optimizer.lr: expected"));
}

TEST_CASE("config: wrong TOML type names the key") {
  zf::run_config cfg;
  auto msg = error_of([&] { zf::apply_toml(cfg, "[model]\nn_layer = \"abc\"\n", "t.toml"); });
  CHECK(contains(msg, "model.n_layer"));
  CHECK(contains(msg, "integer"));
  CHECK(contains(msg, "t.toml"));
  CHECK(cfg.model.n_layer == zf::model_config{}.n_layer);

  msg = error_of([&] { zf::apply_toml(cfg, "[data]\ncorpus = 5\n", "s.toml"); });
  CHECK(contains(msg, "data.corpus"));
  CHECK(contains(msg, "string"));

  msg = error_of([&] { zf::apply_toml(cfg, "[optimizer]\nlr = \"fast\"\n", "f.toml"); });
  CHECK(contains(msg, "optimizer.lr"));
  CHECK(contains(msg, "number"));

  // an integer is fine for a float key
  zf::apply_toml(cfg, "[optimizer]\nlr = 1\n", "i.toml");
  CHECK(cfg.optimizer.lr == 1.0);
}

TEST_CASE("config: an integer key refuses a fractional value") {
  zf::run_config cfg;
  auto msg = error_of([&] { zf::apply_toml(cfg, "[model]\nn_layer = 1.5\n", "frac.toml"); });
  CHECK(contains(msg, "model.n_layer"));
  CHECK(contains(msg, "integer"));
  CHECK(contains(msg, "1.5"));
  msg = error_of([&] { zf::apply_override(cfg, "model.n_layer=1.5"); });
  CHECK(contains(msg, "model.n_layer: expected an integer, got 1.5"));
  CHECK(cfg.model.n_layer == zf::model_config{}.n_layer);
}

TEST_CASE("config: --set overrides") {
  zf::run_config cfg;
  zf::apply_override(cfg, "optimizer.lr=1e-3");
  CHECK(cfg.optimizer.lr == 1e-3);
  zf::apply_override(cfg, "model.n_layer=7");
  CHECK(cfg.model.n_layer == 7);
  zf::apply_override(cfg, "data.corpus=\"my file.txt\"");  // surrounding quotes are dropped
  CHECK(cfg.data.corpus == "my file.txt");
  zf::apply_override(cfg, "data.corpus=plain.tok");
  CHECK(cfg.data.corpus == "plain.tok");
  zf::apply_override(cfg, "train.seed=99");
  CHECK(cfg.train.seed == 99);

  auto msg = error_of([&] { zf::apply_override(cfg, "train.steps=abc"); });
  CHECK(contains(msg, "train.steps"));
  CHECK(contains(msg, "'abc'"));
  msg = error_of([&] { zf::apply_override(cfg, "optimizer.lr=1e-3x"); });  // trailing garbage
  CHECK(contains(msg, "optimizer.lr"));
  CHECK(contains(msg, "'1e-3x'"));
  CHECK(cfg.optimizer.lr == 1e-3);

  msg = error_of([&] { zf::apply_override(cfg, "optimizer.lr"); });
  CHECK(contains(msg, "expected key=value"));
  msg = error_of([&] { zf::apply_override(cfg, "=5"); });
  CHECK(contains(msg, "expected key=value"));

  msg = error_of([&] { zf::apply_override(cfg, "train.foo=1"); });
  CHECK(contains(msg, "unknown config key 'train.foo'"));
  CHECK(contains(msg, "--set"));

  // load_config applies overrides after the defaults and validates the result
  auto loaded = zf::load_config("", {"train.steps=10", "schedule.warmup=2"});
  CHECK(loaded.train.steps == 10);
  CHECK(loaded.schedule.warmup == 2);
  msg = error_of([&] { zf::load_config("", {"model.n_head=3"}); });
  CHECK(contains(msg, "model.n_head"));
}

TEST_CASE("config: cross-key checks") {
  zf::run_config cfg;
  cfg.model.n_embd = 64;
  cfg.model.n_head = 6;
  auto msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "model.n_head: expected a divisor of model.n_embd (64), got 6"));
  cfg.model.n_head = 8;
  CHECK_NOTHROW(zf::validate(cfg));

  cfg.model.n_positions = 64;
  cfg.train.seq_len = 65;
  msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "train.seq_len: expected at most model.n_positions (64), got 65"));
  cfg.train.seq_len = 64;
  CHECK_NOTHROW(zf::validate(cfg));

  cfg.data.tokenizer = "llama";
  msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "data.tokenizer"));
  cfg.data.tokenizer = "gpt2";
  cfg.data.corpus = "";
  msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "data.corpus"));
}

TEST_CASE("config: TOML syntax error names file and line") {
  zf::run_config cfg;
  auto msg = error_of(
      [&] { zf::apply_toml(cfg, "[train]\nsteps = 5\nlr = = 3\n", "configs/broken.toml"); });
  CHECK(contains(msg, "configs/broken.toml:3"));
  CHECK(contains(msg, "TOML parse error"));
  // load_config names a missing file
  msg = error_of([&] { zf::load_config("/nonexistent/zf_no_such.toml", {}); });
  CHECK(contains(msg, "/nonexistent/zf_no_such.toml"));
}

TEST_CASE("config: enum, bool and list keys, serve sections, all through one schema") {
  zf::run_config cfg;
  // enums name the choices
  auto msg = error_of([&] { zf::apply_override(cfg, "engine.policy=fifo"); });
  CHECK(contains(msg,
                 "engine.policy: expected one of \"split_fuse\", \"static_batch\", got \"fifo\""));
  msg = error_of([&] { zf::apply_toml(cfg, "[model]\narch = 'mamba'\n", "m.toml"); });
  CHECK(contains(msg, "model.arch: expected one of \"gpt2\", \"llama\", got \"mamba\""));
  CHECK(cfg.model.arch == "gpt2");
  // bools
  msg = error_of([&] { zf::apply_override(cfg, "engine.prefix_caching=yes"); });
  CHECK(contains(msg, "engine.prefix_caching: expected true or false, got 'yes'"));
  msg = error_of([&] { zf::apply_toml(cfg, "[engine]\nbatch_invariant = 1\n", "b.toml"); });
  CHECK(contains(msg, "engine.batch_invariant: expected true or false, got 1 (b.toml)"));
  zf::apply_override(cfg, "engine.batch_invariant=true");
  CHECK(cfg.engine.batch_invariant);
  // lists: a,b or a TOML array; items must be strings
  zf::apply_override(cfg, "server.api_keys=k1,k2");
  CHECK(cfg.server.api_keys == std::vector<std::string>{"k1", "k2"});
  zf::apply_override(cfg, "server.api_keys=[\"a b\", \"c\"]");
  CHECK(cfg.server.api_keys == std::vector<std::string>{"a b", "c"});
  msg = error_of([&] { zf::apply_toml(cfg, "[server]\napi_keys = [1]\n", "l.toml"); });
  CHECK(contains(msg, "server.api_keys: expected a list of strings"));
  // ranges in the new sections
  msg = error_of([&] { zf::apply_override(cfg, "engine.token_budget=0"); });
  CHECK(contains(msg, "engine.token_budget: expected 1..65536, got 0"));
  msg = error_of([&] { zf::apply_override(cfg, "server.port=70000"); });
  CHECK(contains(msg, "server.port: expected 0..65535, got 70000"));
  // nested model keys and the round trip of everything
  zf::apply_override(cfg, "model.rope_scaling.type=llama3");
  zf::apply_override(cfg, "model.tied_head=false");
  zf::apply_override(cfg, "engine.token_budget=512");
  zf::apply_override(cfg, "server.host=0.0.0.0");
  const std::string text = zf::to_toml(cfg);
  zf::run_config back;
  zf::apply_toml(back, text, "all.toml");
  CHECK(zf::to_toml(back) == text);
  CHECK(back.engine.token_budget == 512);
  CHECK(back.server.host == "0.0.0.0");
  CHECK(back.server.api_keys == cfg.server.api_keys);
  CHECK(back.model.rope_type == "llama3");
  CHECK_FALSE(back.model.tied_head);
  // the schema lists every key once, each documented, and value_text renders it
  std::set<std::string> seen;
  for (auto& k : zf::config_schema()) {
    CHECK(seen.insert(k.path).second);
    CHECK(!k.help.empty());
    CHECK(
        contains(text, k.path.substr(k.path.find('.') + 1) + " = " + zf::value_text(cfg, k.path)));
  }
  CHECK(seen.count("engine.policy"));
  CHECK(seen.count("server.api_keys"));
  CHECK(zf::value_text(zf::run_config{}, "engine.policy") == "'split_fuse'");
}

TEST_CASE("config: a Llama spec from model keys and back") {
  zf::run_config cfg;
  zf::apply_override(cfg, "model.arch=llama");
  zf::apply_override(cfg, "model.n_kv_head=2");
  zf::apply_override(cfg, "model.tied_head=false");
  REQUIRE_NOTHROW(zf::validate(cfg));
  const zf::model_spec s = zf::spec_of(cfg.model);
  CHECK(s.arch == zf::model_arch::llama);
  CHECK(s.n_kv_head == 2);
  CHECK(s.intermediate == 704);  // 8/3 * 256 rounded up to 32
  CHECK(zf::spec_of(zf::config_of(s)).intermediate == 704);
  zf::apply_override(cfg, "model.n_kv_head=3");
  auto msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "model.n_kv_head: expected a divisor of model.n_head (4), got 3"));
  cfg.model.n_kv_head = 2;
  cfg.model.arch = "gpt2";
  msg = error_of([&] { zf::validate(cfg); });
  CHECK(contains(msg, "gpt2 has no grouped-query attention"));
}

TEST_CASE("config: keys that moved are read under their old paths, written under the new") {
  // Config files and checkpoints written before the split of `train` name train.lr,
  // train.zero.stage, ...; they must still load (resume reads a checkpoint's own TOML).
  zf::run_config cfg;
  zf::apply_toml(cfg,
                 "[train]\nlr = 0.5\nwarmup = 3\ncheckpoint_every = 7\nkeep_checkpoints = 4\n"
                 "eval_every = 9\neval_batches = 2\ngrad_clip = 0.25\nzero.stage = 2\n",
                 "old.toml");
  CHECK(cfg.optimizer.lr == 0.5);
  CHECK(cfg.schedule.warmup == 3);
  CHECK(cfg.checkpoint.every == 7);
  CHECK(cfg.checkpoint.keep == 4);
  CHECK(cfg.eval.every == 9);
  CHECK(cfg.eval.batches == 2);
  CHECK(cfg.optimizer.grad_clip == 0.25);
  CHECK(cfg.zero.stage == 2);
  zf::apply_override(cfg, "train.beta2=0.99");
  CHECK(cfg.optimizer.beta2 == 0.99);
  // errors name the key's current path
  CHECK(contains(error_of([&] { zf::apply_override(cfg, "train.lr=-1"); }), "optimizer.lr"));
  // every old path leads to a key of the schema, and none is written back
  const std::string text = zf::to_toml(cfg);
  for (auto& [old_path, now] : zf::renamed_keys()) {
    CAPTURE(old_path);
    CHECK(zf::value_text(cfg, old_path) == zf::value_text(cfg, now));
    CHECK(text.find(now.substr(now.find('.') + 1)) != std::string::npos);
  }
  CHECK(text.find("[optimizer]") != std::string::npos);
  CHECK(text.find("checkpoint_every") == std::string::npos);
}

TEST_CASE("config: monitor.tensorboard is a bool, false by default, in its own [monitor] table") {
  zf::run_config cfg;
  CHECK_FALSE(cfg.monitor.tensorboard);
  CHECK(zf::value_text(cfg, "monitor.tensorboard") == "false");
  CHECK(contains(zf::to_toml(cfg), "\n[monitor]\ntensorboard = false  # "));
  zf::apply_override(cfg, "monitor.tensorboard=true");
  CHECK(cfg.monitor.tensorboard);
  zf::run_config from_toml;
  zf::apply_toml(from_toml, "[monitor]\ntensorboard = true\n", "m.toml");
  CHECK(from_toml.monitor.tensorboard);
  zf::run_config back;  // and through `zeroflow config`'s text
  zf::apply_toml(back, zf::to_toml(cfg), "all.toml");
  CHECK(back.monitor.tensorboard);
  auto msg = error_of([&] { zf::apply_override(cfg, "monitor.tensorboard=1"); });
  CHECK(contains(msg, "monitor.tensorboard: expected true or false, got '1'"));
  msg = error_of([&] { zf::apply_toml(cfg, "[monitor]\ntensorboard = 'yes'\n", "tb.toml"); });
  CHECK(contains(msg, "monitor.tensorboard: expected true or false, got 'yes' (tb.toml)"));
  msg = error_of([&] { zf::apply_toml(cfg, "[monitor]\ntensorbored = true\n", "typo.toml"); });
  CHECK(contains(msg, "unknown config key 'monitor.tensorbored' in typo.toml"));
  CHECK(cfg.monitor.tensorboard);  // the refusals left the value as it was
}

TEST_CASE("config: train.comm_timeout_s is whole seconds, 60 by default, at least 1") {
  zf::run_config cfg;
  CHECK(cfg.train.comm_timeout_s == 60);
  CHECK(contains(zf::to_toml(cfg), "\ncomm_timeout_s = 60  # "));
  zf::apply_override(cfg, "train.comm_timeout_s=5");
  CHECK(cfg.train.comm_timeout_s == 5);
  zf::run_config back;
  zf::apply_toml(back, zf::to_toml(cfg), "all.toml");
  CHECK(back.train.comm_timeout_s == 5);
  auto msg = error_of([&] { zf::apply_override(cfg, "train.comm_timeout_s=0"); });
  CHECK(contains(msg, "train.comm_timeout_s: expected 1..604800, got 0"));
  msg = error_of([&] { zf::apply_override(cfg, "train.comm_timeout_s=1.5"); });
  CHECK(contains(msg, "train.comm_timeout_s: expected an integer, got 1.5"));
  zf::run_config direct;
  direct.train.comm_timeout_s = -3;
  msg = error_of([&] { zf::validate(direct); });
  CHECK(contains(msg, "train.comm_timeout_s: expected 1..604800, got -3"));
  CHECK(cfg.train.comm_timeout_s == 5);  // the refusals left the value as it was
}
