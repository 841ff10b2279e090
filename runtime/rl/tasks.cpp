// The built-in tasks (tasks.hpp): each is a prompt format and an answer rule over letters or
// digits drawn with rng() % n.
#include "runtime/rl/tasks.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/text/byte_vocab.hpp"

namespace zf::rl {

namespace {

constexpr int kMaxLetters = 64;  // letters per prompt; far past what a 64-token context holds
constexpr int kMaxOperand = 999'999'999;

// Uniform in [0, n) for n >= 1 (see "Determinism" in tasks.hpp).
std::uint64_t pick(std::mt19937_64& rng, std::uint64_t n) {
  return rng() % n;
}

// min_len..max_len letters from the first `letters` of a..z.
std::string random_letters(std::mt19937_64& rng, const task_options& o) {
  const auto len = o.min_len + int(pick(rng, std::uint64_t(o.max_len - o.min_len + 1)));
  std::string s(std::size_t(len), 'a');
  for (char& c : s) c = char('a' + pick(rng, std::uint64_t(o.letters)));
  return s;
}

// reverse / copy / sort: "<name> <letters>=" and an answer computed from the letters.
class letters_task : public task {
 public:
  enum class kind { reverse, copy, sort };
  letters_task(std::string name, const task_options& o, kind k) : task(std::move(name), o), k_(k) {}

  task_sample make(std::mt19937_64& rng) const override {
    std::string in = random_letters(rng, options());
    std::string out = in;
    if (k_ == kind::reverse) std::reverse(out.begin(), out.end());
    if (k_ == kind::sort) std::sort(out.begin(), out.end());
    return {name() + " " + in + "=", std::move(out)};
  }

 private:
  kind k_;
};

// add: "add A+B=" -> decimal A+B.
class add_task : public task {
 public:
  add_task(const task_options& o) : task("add", o) {}

  task_sample make(std::mt19937_64& rng) const override {
    const auto n = std::uint64_t(options().max_operand) + 1;
    const std::uint64_t a = pick(rng, n), b = pick(rng, n);
    return {fmt::format("add {}+{}=", a, b), std::to_string(a + b)};
  }
};

}  // namespace

double match_reward(std::string_view answer, std::string_view completion) {
  if (completion == answer) return 1.0;
  const std::size_t n = std::min(answer.size(), completion.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < n; ++i) same += answer[i] == completion[i];
  // Not identical, so max(...) > 0 and, with same <= min(...), same < max(...) unless the two
  // have equal length, where a mismatch makes same < length: below 0.5 either way.
  return 0.5 * double(same) / double(std::max(answer.size(), completion.size()));
}

task::task(std::string name, const task_options& o) : name_(std::move(name)), options_(o) {
  if (o.min_len < 1 || o.min_len > o.max_len || o.max_len > kMaxLetters)
    fail("task '{}': min_len {} / max_len {} must satisfy 1 <= min_len <= max_len <= {}", name_,
         o.min_len, o.max_len, kMaxLetters);
  if (o.letters < 1 || o.letters > 26)
    fail("task '{}': letters {} must be 1..26 (the first letters of a..z)", name_, o.letters);
  if (o.max_operand < 0 || o.max_operand > kMaxOperand)
    fail("task '{}': max_operand {} must be 0..{}", name_, o.max_operand, kMaxOperand);
}

task::~task() = default;

double task::reward(const task_sample& sample, std::string_view completion) const {
  return match_reward(sample.answer, completion);
}

bool task::solved(const task_sample& sample, std::string_view completion) const {
  return completion == sample.answer;
}

std::vector<std::string> task_names() {
  return {"reverse", "copy", "sort", "add"};
}

std::unique_ptr<task> make_task(const std::string& name, const task_options& o) {
  using k = letters_task::kind;
  if (name == "reverse") return std::make_unique<letters_task>(name, o, k::reverse);
  if (name == "copy") return std::make_unique<letters_task>(name, o, k::copy);
  if (name == "sort") return std::make_unique<letters_task>(name, o, k::sort);
  if (name == "add") return std::make_unique<add_task>(o);
  fail("unknown task '{}': the built-in tasks are {}", name, fmt::join(task_names(), ", "));
}

std::vector<task_sample> make_samples(const task& t, std::uint64_t seed, int count) {
  if (count < 0) fail("task '{}': sample count {} is negative", t.name(), count);
  std::mt19937_64 rng(seed);
  std::vector<task_sample> out;
  out.reserve(std::size_t(count));
  for (int i = 0; i < count; ++i) out.push_back(t.make(rng));
  return out;
}

void apply_task_defaults(run_config& c) {
  c.model.arch = "gpt2";
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 64;
  c.model.n_positions = 32;
  c.model.vocab_size = kByteVocabSize;
  c.train.seq_len = c.model.n_positions;  // unused by RL, but checked against the context
  c.optimizer.weight_decay = 0.0;
}

}  // namespace zf::rl
