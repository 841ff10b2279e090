#pragma once
// Built-in RL tasks: small problems with one checkable answer that make their own data from a
// seed, so PPO / GRPO / RLOO can be trained and tested without any dataset or reward model.
//
//   task      prompt          answer   what varies
//   reverse   "reverse abc="  "cba"    letters: length min_len..max_len, each of the first
//   copy      "copy abc="     "abc"    `letters` of a..z (26 by default), drawn independently
//   sort      "sort cab="     "abc"
//   add       "add 12+7="     "19"     two operands, each 0..max_operand (0..99 by default),
//                                      written in decimal without leading zeros
//
// Prompts are short (a 32-64 token context must hold prompt, answer and end-of-text) and, with
// the byte-level vocabulary (runtime/text/byte_vocab.hpp), one token per character. The
// completion the policy generates after the prompt is scored by reward() / match_reward().
//
// Determinism: make() draws from std::mt19937_64, whose sequence the standard fixes, through
// rng() % n (not std::uniform_int_distribution, whose output differs between standard
// libraries), so a seed gives the same samples everywhere. The modulo bias, n / 2^64, is below
// 2^-34 for every range here (n <= 10^9).
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace zf {
struct run_config;
}

namespace zf::rl {

// The model keys a policy trained from scratch on a task gets unless the user sets them: a small
// GPT-2 (2 layers, n_embd 64, context 32) on the byte vocabulary (runtime/text/byte_vocab), no
// weight decay.
void apply_task_defaults(run_config& c);

struct task_sample {
  std::string prompt;  // "reverse abc=": what the policy is given
  std::string answer;  // "cba": the one correct completion (never empty)
};

struct task_options {
  int min_len = 3, max_len = 5;  // letters per prompt (reverse, copy, sort): 1 <= min <= max <= 64
  int letters = 26;              // alphabet: the first `letters` of a..z, 1..26 (fewer is easier)
  int max_operand = 99;          // add: each operand is 0..max_operand, 0..999999999
};

// The reward of a completion against the correct answer: 1.0 when they are identical; else
// partial credit 0.5 * (positions i with completion[i] == answer[i]) / max(|answer|,
// |completion|), which is strictly below 0.5, so any exact answer beats every near miss. An empty
// completion (with a non-empty answer) scores 0. Bytes are compared as they are: no trimming,
// since stopping at the right place is part of the task. Prompt files with an "answer" use this
// same rule (rl_data.hpp).
double match_reward(std::string_view answer, std::string_view completion);

class task {
 public:
  virtual ~task();
  virtual const std::string& name() const { return name_; }
  const task_options& options() const { return options_; }
  // One sample, advancing rng.
  virtual task_sample make(std::mt19937_64& rng) const = 0;
  // completion: the text generated after the prompt, end-of-text token already removed.
  // match_reward(sample.answer, completion) unless a task knows better.
  virtual double reward(const task_sample& sample, std::string_view completion) const;
  // The completion is exactly the answer.
  bool solved(const task_sample& sample, std::string_view completion) const;

 protected:
  // Checks options (zf::error naming the task and the bad field).
  task(std::string name, const task_options& options);

 private:
  std::string name_;
  task_options options_;
};

// "reverse", "copy", "sort" or "add"; any other name throws zf::error listing the known ones.
std::unique_ptr<task> make_task(const std::string& name, const task_options& options = {});
// The known task names, in the order of the table above.
std::vector<std::string> task_names();

// count samples from std::mt19937_64(seed): the same list for the same task, options and seed.
// count < 0 throws zf::error.
std::vector<task_sample> make_samples(const task& t, std::uint64_t seed, int count);

}  // namespace zf::rl
