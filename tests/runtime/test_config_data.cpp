// Issue 13's configuration keys (train.tokens, train.random_ltd.*, schedule.decay_by,
// data.sources, data.blend_seed, data.curriculum.*): the two list kinds beyond strings (integer
// lists, data.sources) through TOML, --set and the to_toml round trip, and the message of every
// refusal and cross-key check (each names the key, and the item where there is one).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "test_util.hpp"

namespace {

using zf::testing::contains;
using zf::testing::error_of;

using ints = std::vector<int64_t>;

zf::run_config round_trip(const zf::run_config& c) {
  zf::run_config back;
  zf::apply_toml(back, zf::to_toml(c), "all.toml");
  CHECK(zf::to_toml(back) == zf::to_toml(c));
  return back;
}

bool same_sources(const std::vector<zf::data_source>& a, const std::vector<zf::data_source>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].path != b[i].path || a[i].weight != b[i].weight) return false;
  return true;
}

}  // namespace

TEST_CASE("config data: issue 13's keys have their defaults in the schema and in to_toml") {
  const zf::run_config d;
  const std::string text = zf::to_toml(d);
  CHECK(contains(text, "\ntokens = 0  # "));
  CHECK(contains(text, "\nrandom_ltd.layers = []  # "));
  CHECK(contains(text, "\nrandom_ltd.step_size = 16  # "));
  CHECK(contains(text, "\ndecay_by = 'steps'  # "));
  CHECK(contains(text, "\nsources = []  # "));
  CHECK(contains(text, "\nblend_seed = 1234  # "));
  CHECK(contains(text, "\ncurriculum.seqlen_mode = 'truncate'  # "));
  for (const char* m : {"seqlen", "vocab_rarity", "custom"})
    for (const char* f :
         {"enabled", "difficulty_type", "pacing", "min_difficulty", "max_difficulty", "total_steps",
          "difficulty_step", "root_degree", "difficulties", "max_steps", "index"}) {
      const std::string path = std::string("data.curriculum.") + m + "." + f;
      CAPTURE(path);
      CHECK_NOTHROW(zf::value_text(d, path));
    }
  CHECK(zf::value_text(d, "data.curriculum.custom.difficulties") == "[]");
  // one [train] and one [data] table: the new keys sit with their sections' other keys
  CHECK(text.find("[train]") == text.rfind("[train]"));
  CHECK(text.find("[data]") == text.rfind("[data]"));
  CHECK_NOTHROW(zf::validate(d));
}

TEST_CASE("config data: an integer list from TOML, --set a,b and --set [a, b], written [a, b]") {
  zf::run_config c;
  zf::apply_toml(c, "[train.random_ltd]\nlayers = [1, 2]\n", "l.toml");
  CHECK(c.train.random_ltd.layers == ints{1, 2});
  zf::apply_override(c, "train.random_ltd.layers=3,0, 2");
  CHECK(c.train.random_ltd.layers == ints{3, 0, 2});
  zf::apply_override(c, "train.random_ltd.layers=[1,2,3]");
  CHECK(c.train.random_ltd.layers == ints{1, 2, 3});
  CHECK(zf::value_text(c, "train.random_ltd.layers") == "[1, 2, 3]");
  zf::apply_override(c, "data.curriculum.seqlen.difficulties=8,64,128");
  zf::apply_override(c, "data.curriculum.seqlen.max_steps=[100, 200]");
  const zf::run_config back = round_trip(c);
  CHECK(back.train.random_ltd.layers == ints{1, 2, 3});
  CHECK(back.data.curriculum.seqlen.difficulties == ints{8, 64, 128});
  CHECK(back.data.curriculum.seqlen.max_steps == ints{100, 200});
  // an empty value and [] both clear the list
  zf::apply_override(c, "train.random_ltd.layers=");
  CHECK(c.train.random_ltd.layers.empty());
  zf::apply_override(c, "data.curriculum.seqlen.max_steps=[]");
  CHECK(c.data.curriculum.seqlen.max_steps.empty());
}

TEST_CASE("config data: an integer list refuses a bad item by key and index, keeping its value") {
  zf::run_config c;
  zf::apply_override(c, "train.random_ltd.layers=1");
  auto msg = error_of([&] { zf::apply_override(c, "train.random_ltd.layers=1,300"); });
  CHECK(contains(msg, "train.random_ltd.layers[1]: expected 0..255, got 300"));
  msg = error_of([&] { zf::apply_override(c, "train.random_ltd.layers=1,x"); });
  CHECK(contains(msg, "train.random_ltd.layers[1]: expected an integer, got 'x'"));
  msg = error_of([&] { zf::apply_override(c, "train.random_ltd.layers=1,,2"); });
  CHECK(contains(msg, "train.random_ltd.layers[1]: expected an integer, got ''"));
  msg = error_of([&] { zf::apply_override(c, "train.random_ltd.layers=[-1]"); });
  CHECK(contains(msg, "train.random_ltd.layers[0]: expected 0..255, got -1"));
  msg = error_of([&] { zf::apply_override(c, "train.random_ltd.layers=[1,"); });
  CHECK(contains(msg, "train.random_ltd.layers: expected a TOML list"));
  msg = error_of([&] { zf::apply_toml(c, "[train]\nrandom_ltd.layers = [0, 1.5]\n", "f.toml"); });
  CHECK(contains(msg, "train.random_ltd.layers[1]: expected an integer, got 1.5 (f.toml)"));
  msg = error_of([&] { zf::apply_toml(c, "[train]\nrandom_ltd.layers = 2\n", "n.toml"); });
  CHECK(contains(msg, "train.random_ltd.layers: expected a list of integers, got 2 (n.toml)"));
  CHECK(c.train.random_ltd.layers == ints{1});
  // validate() checks values set on the struct directly
  zf::run_config direct;
  direct.data.curriculum.custom.max_steps = {5, -2};
  msg = error_of([&] { zf::validate(direct); });
  CHECK(contains(msg, "data.curriculum.custom.max_steps[1]: expected 0..1000000000, got -2"));
}

TEST_CASE("config data: data.sources from TOML tables, both TOML spellings") {
  zf::run_config c;
  zf::apply_toml(c,
                 "[data]\nsources = [{path = \"moby-dick\", weight = 2}, {path = \"kjv-bible\", "
                 "weight = 0.5}, {path = \"sotu\"}]\n",
                 "s.toml");
  REQUIRE(c.data.sources.size() == 3);
  CHECK(same_sources(c.data.sources, {{"moby-dick", 2}, {"kjv-bible", 0.5}, {"sotu", 1}}));
  CHECK(zf::value_text(c, "data.sources") ==
        "[{path = 'moby-dick', weight = 2.0}, {path = 'kjv-bible', weight = 0.5}, "
        "{path = 'sotu', weight = 1.0}]");
  CHECK(same_sources(round_trip(c).data.sources, c.data.sources));
  zf::run_config t;  // an array of tables is the same list
  zf::apply_toml(t, "[[data.sources]]\npath = 'a.txt'\nweight = 3\n[[data.sources]]\npath = 'b'\n",
                 "t.toml");
  CHECK(same_sources(t.data.sources, {{"a.txt", 3}, {"b", 1}}));
  // a path that needs escapes survives the round trip
  zf::run_config q;
  q.data.sources = {{"dir with space/it's \"x\":1.txt", 0.25}};
  CHECK(same_sources(round_trip(q).data.sources, q.data.sources));
}

TEST_CASE("config data: data.sources from --set, split at the last ':'") {
  zf::run_config c;
  zf::apply_override(c, "data.sources=moby-dick:2,kjv-bible:1");
  CHECK(same_sources(c.data.sources, {{"moby-dick", 2}, {"kjv-bible", 1}}));
  zf::apply_override(c, "data.sources=sotu, /data/a:b.txt:0.5,x.tok");  // weight optional
  CHECK(same_sources(c.data.sources, {{"sotu", 1}, {"/data/a:b.txt", 0.5}, {"x.tok", 1}}));
  zf::apply_override(c, "data.sources=[{path = \"q,r.txt\", weight = 4}]");  // ',' in a path
  CHECK(same_sources(c.data.sources, {{"q,r.txt", 4}}));
  zf::apply_override(c, "data.sources=");
  CHECK(c.data.sources.empty());
}

TEST_CASE("config data: data.sources refusals name the key and the item") {
  zf::run_config c;
  zf::apply_override(c, "data.sources=a:1");
  const auto refused = [&](const std::string& toml) {
    return error_of([&] { zf::apply_toml(c, "[data]\nsources = " + toml + "\n", "s.toml"); });
  };
  CHECK(contains(refused("[{path = 'a', wieght = 2}]"),
                 "data.sources[0]: unknown field 'wieght' (expected path and weight) (s.toml)"));
  CHECK(contains(refused("[{path = 'a'}, {path = 'b', weight = 0}]"),
                 "data.sources[1] (\"b\"): expected a finite weight > 0, got 0"));
  CHECK(contains(refused("[{path = 'a', weight = -1.5}]"),
                 "data.sources[0] (\"a\"): expected a finite weight > 0, got -1.5"));
  CHECK(contains(refused("[{path = 'a', weight = inf}]"),
                 "data.sources[0] (\"a\"): expected a "
                 "finite weight > 0, got inf"));
  CHECK(contains(refused("[{path = 'a', weight = nan}]"), "data.sources[0] (\"a\")"));
  CHECK(contains(refused("[{path = 'a', weight = '2'}]"),
                 "data.sources[0].weight: expected a number"));
  CHECK(contains(refused("[{weight = 2}]"), "data.sources[0]: expected a path field (s.toml)"));
  CHECK(contains(refused("[{path = 7}]"), "data.sources[0].path: expected a string, got 7"));
  CHECK(contains(refused("[{path = ''}]"), "data.sources[0]: expected a corpus name or path"));
  CHECK(contains(refused("['moby-dick:2']"), "data.sources[0]: expected a table {path = "));
  CHECK(contains(refused("{path = 'a'}"), "data.sources: expected a list of {path = "));
  CHECK(contains(refused("'a'"), "data.sources: expected a list of {path = "));

  auto msg = error_of([&] { zf::apply_override(c, "data.sources=a:2,b:heavy"); });
  CHECK(contains(msg,
                 "data.sources[1] (\"b\"): expected path:weight with a number after the last "
                 "':', got 'heavy' (a path that holds ':' needs the weight: 'b:heavy:1')"));
  msg = error_of([&] { zf::apply_override(c, "data.sources=a:2,,b"); });
  CHECK(contains(msg, "data.sources[1]: expected path[:weight], got an empty item"));
  msg = error_of([&] { zf::apply_override(c, "data.sources=a:0"); });
  CHECK(contains(msg, "data.sources[0] (\"a\"): expected a finite weight > 0, got 0"));
  msg = error_of([&] { zf::apply_override(c, "data.sources=:2"); });
  CHECK(contains(msg, "data.sources[0]: expected a corpus name or path, got \"\""));
  CHECK(same_sources(c.data.sources, {{"a", 1}}));  // every refusal left the value as it was

  zf::run_config direct;
  direct.data.sources = {{"a", 1}, {"b", -1}};
  msg = error_of([&] { zf::validate(direct); });
  CHECK(contains(msg, "data.sources[1] (\"b\"): expected a finite weight > 0, got -1"));
}

TEST_CASE("config data: scalar keys of issue 13 through --set, TOML and the round trip") {
  zf::run_config c;
  zf::apply_override(c, "train.tokens=123456");
  zf::apply_override(c, "train.random_ltd.enabled=true");
  zf::apply_override(c, "train.random_ltd.min_tokens=32");
  zf::apply_override(c, "train.random_ltd.total_steps=300");
  zf::apply_override(c, "train.random_ltd.step_size=8");
  zf::apply_override(c, "schedule.decay_by=layer_tokens");
  zf::apply_override(c, "data.blend_seed=9000000000000000001");  // int64, beyond 2^53
  zf::apply_override(c, "data.curriculum.seqlen_mode=reshape");
  zf::apply_toml(c,
                 "[data.curriculum.vocab_rarity]\nenabled = true\ndifficulty_type = 'percentile'\n"
                 "pacing = 'fixed_root'\nmin_difficulty = 10\nmax_difficulty = 100\n"
                 "total_steps = 500\ndifficulty_step = 5\nroot_degree = 3\nindex = 'idx'\n",
                 "v.toml");
  const zf::run_config b = round_trip(c);
  CHECK(b.train.tokens == 123456);
  CHECK(b.train.random_ltd.enabled);
  CHECK(b.train.random_ltd.min_tokens == 32);
  CHECK(b.train.random_ltd.total_steps == 300);
  CHECK(b.train.random_ltd.step_size == 8);
  CHECK(b.schedule.decay_by == "layer_tokens");
  CHECK(b.data.blend_seed == 9000000000000000001);
  CHECK(b.data.curriculum.seqlen_mode == "reshape");
  const zf::metric_curriculum& v = b.data.curriculum.vocab_rarity;
  CHECK(v.enabled);
  CHECK(v.difficulty_type == "percentile");
  CHECK(v.pacing == "fixed_root");
  CHECK(v.min_difficulty == 10);
  CHECK(v.max_difficulty == 100);
  CHECK(v.total_steps == 500);
  CHECK(v.difficulty_step == 5);
  CHECK(v.root_degree == 3);
  CHECK(v.index == "idx");
  CHECK_FALSE(b.data.curriculum.custom.enabled);

  auto msg = error_of([&] { zf::apply_override(c, "schedule.decay_by=epochs"); });
  CHECK(contains(msg,
                 "schedule.decay_by: expected one of \"steps\", \"tokens\", "
                 "\"layer_tokens\", got \"epochs\""));
  msg = error_of([&] { zf::apply_override(c, "data.curriculum.seqlen_mode=pad"); });
  CHECK(contains(msg, "data.curriculum.seqlen_mode: expected one of \"truncate\", \"reshape\""));
  msg = error_of([&] { zf::apply_override(c, "data.curriculum.custom.pacing=fixed_cubic"); });
  CHECK(contains(msg,
                 "data.curriculum.custom.pacing: expected one of \"fixed_linear\", "
                 "\"fixed_root\", \"fixed_discrete\", got \"fixed_cubic\""));
  msg = error_of([&] { zf::apply_override(c, "data.curriculum.seqlen.difficulty_type=rank"); });
  CHECK(contains(msg,
                 "data.curriculum.seqlen.difficulty_type: expected one of \"value\", "
                 "\"percentile\", got \"rank\""));
  msg = error_of([&] { zf::apply_override(c, "train.random_ltd.step_size=0"); });
  CHECK(contains(msg, "train.random_ltd.step_size: expected 1..1048576, got 0"));
  msg = error_of([&] { zf::apply_override(c, "train.tokens=-5"); });
  CHECK(contains(msg, "train.tokens: expected 0..1000000000000000, got -5"));
  msg =
      error_of([&] { zf::apply_toml(c, "[data]\ncurriculum.seqlen.root_degree = 0\n", "r.toml"); });
  CHECK(contains(msg, "data.curriculum.seqlen.root_degree: expected 1..64, got 0"));
  msg = error_of([&] { zf::apply_toml(c, "[data.curriculum.seqlen]\nenable = true\n", "e.toml"); });
  CHECK(contains(msg, "unknown config key 'data.curriculum.seqlen.enable' in e.toml"));
}

TEST_CASE("config data: cross-key checks of a seqlen curriculum") {
  zf::run_config c;  // train.seq_len 128
  c.data.curriculum.seqlen.enabled = true;
  c.data.curriculum.seqlen.min_difficulty = 8;
  CHECK_NOTHROW(zf::validate(c));  // max_difficulty 0: train.seq_len
  c.data.curriculum.seqlen.max_difficulty = 128;
  CHECK_NOTHROW(zf::validate(c));
  c.data.curriculum.seqlen.max_difficulty = 129;
  auto msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg,
                 "data.curriculum.seqlen.max_difficulty: expected at most train.seq_len "
                 "(128; 0 = train.seq_len), got 129"));
  c.data.curriculum.seqlen.max_difficulty = 64;
  c.data.curriculum.seqlen.min_difficulty = 0;
  msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg,
                 "data.curriculum.seqlen.min_difficulty: expected 1..train.seq_len (128), "
                 "got 0"));
  c.data.curriculum.seqlen.min_difficulty = 8;
  c.data.curriculum.seqlen.difficulty_type = "percentile";
  msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg,
                 "data.curriculum.seqlen.difficulty_type: expected \"value\" (the "
                 "difficulty is a sequence length), got \"percentile\""));
  // a disabled curriculum is not checked
  c.data.curriculum.seqlen.enabled = false;
  CHECK_NOTHROW(zf::validate(c));
}

TEST_CASE("config data: a percentile curriculum stops at 100") {
  for (const char* m : {"vocab_rarity", "custom"}) {
    CAPTURE(m);
    zf::run_config c;
    const std::string p = std::string("data.curriculum.") + m + ".";
    zf::apply_override(c, p + "enabled=true");
    zf::apply_override(c, p + "difficulty_type=percentile");
    zf::apply_override(c, p + "max_difficulty=100");
    CHECK_NOTHROW(zf::validate(c));
    zf::apply_override(c, p + "max_difficulty=101");
    CHECK(contains(error_of([&] { zf::validate(c); }),
                   p + "max_difficulty: expected at most 100 (a percentile), got 101"));
    zf::apply_override(c, p + "difficulty_type=value");  // a metric value may exceed 100
    CHECK_NOTHROW(zf::validate(c));
  }
}

TEST_CASE("config data: cross-key checks of random-LTD") {
  zf::run_config c;  // 4 layers, seq_len 128
  c.train.random_ltd.enabled = true;
  c.train.random_ltd.layers = {1, 2};
  c.train.random_ltd.min_tokens = 128;
  CHECK_NOTHROW(zf::validate(c));
  c.train.random_ltd.min_tokens = 129;
  auto msg = error_of([&] { zf::validate(c); });
  CHECK(
      contains(msg, "train.random_ltd.min_tokens: expected at most train.seq_len (128), got 129"));
  c.train.random_ltd.min_tokens = 0;
  c.train.random_ltd.layers = {1, 4};
  msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg, "train.random_ltd.layers[1]: expected 0..3 (model.n_layer is 4), got 4"));
  c.train.random_ltd.enabled = false;  // unused while disabled
  CHECK_NOTHROW(zf::validate(c));
}

TEST_CASE("config data: train.tokens must be reachable within train.steps") {
  zf::run_config c;  // 600 steps of 8 * 128 tokens: 614400
  c.train.tokens = 614400;
  CHECK_NOTHROW(zf::validate(c));
  c.train.tokens = 614401;
  auto msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg,
                 "train.tokens: 614401 tokens need train.steps >= 601 at 1024 tokens per "
                 "step (train.batch_size * seq_len * grad_accum * ranks), got train.steps = "
                 "600: raise train.steps"));
  c.train.grad_accum = 2;  // every factor counts
  CHECK_NOTHROW(zf::validate(c));
  c.train.grad_accum = 1;
  c.train.ranks = 2;
  CHECK_NOTHROW(zf::validate(c));
  // the largest values of every factor do not overflow the check
  zf::run_config big;
  big.train.tokens = 1000000000000000;
  big.train.steps = 1000000000;
  big.train.batch_size = 1 << 16;
  big.model.n_positions = big.train.seq_len = 1 << 20;
  big.train.grad_accum = 1 << 16;
  big.train.ranks = 64;
  CHECK_NOTHROW(zf::validate(big));
  // decay_by = tokens needs no train.tokens (the total is then train.steps full steps)
  zf::run_config d;
  d.schedule.decay_by = "tokens";
  CHECK_NOTHROW(zf::validate(d));
}

TEST_CASE("config data: data.sources and data.corpus are not given together") {
  zf::run_config c;
  zf::apply_override(c, "data.sources=moby-dick:2,kjv-bible:1");
  CHECK_NOTHROW(zf::validate(c));  // data.corpus left at its default
  zf::apply_override(c, "data.corpus=my.txt");
  auto msg = error_of([&] { zf::validate(c); });
  CHECK(contains(msg, "data.sources and data.corpus are both given (data.corpus = \"my.txt\")"));
  msg = error_of([&] {
    zf::load_config("", {"data.corpus=sotu", "data.sources=moby-dick,kjv-bible"});
  });
  CHECK(contains(msg, "data.sources and data.corpus"));
}
