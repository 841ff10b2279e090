#pragma once
// Where an RL run's prompts come from: a built-in task (runtime/rl/tasks, a fresh seeded sample
// per prompt) or the user's JSON-lines prompts (runtime/rl/rl_data, visited in a seeded order,
// epoch after epoch); either way batch s is a pure function of (seed, s), so runs reproduce.
// Evaluation prompts are held out: the task's from a seed stream training never draws, a file's
// the last eval_count records (not trained on). The rule reward is the task's, or for a file the
// exact-match reward against the record's "answer" (0 where a record has none).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/rl/rl_data.hpp"
#include "runtime/rl/tasks.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::rl {

struct prompt_item {
  std::string prompt, answer;  // answer "" = none known
  std::vector<int> ids;        // the prompt's token ids
};

class prompt_source {
 public:
  static prompt_source from_task(std::shared_ptr<const task> t, const tokenizer& tok, uint64_t seed,
                                 int per_step, int eval_count);
  static prompt_source from_records(std::vector<prompt_record> records, const tokenizer& tok,
                                    uint64_t seed, int per_step, int eval_count);
  // Thread-safe (the rollout worker calls it).
  std::vector<prompt_item> step(int s) const;
  const std::vector<prompt_item>& eval() const { return eval_; }
  double rule_reward(const prompt_item& p, std::string_view completion) const;
  bool has_rule() const { return task_ || has_answers_; }
  int longest_prompt() const { return longest_; }  // tokens, over what step() and eval() give

 private:
  prompt_source() = default;
  prompt_item item(const std::string& prompt, const std::string& answer) const;

  std::shared_ptr<const task> task_;
  std::vector<prompt_record> records_;  // training records (eval ones removed)
  std::shared_ptr<tokenizer> tok_;
  std::shared_ptr<std::mutex> mu_;  // tok_ is one thread's at a time
  uint64_t seed_ = 0;
  int per_step_ = 1, longest_ = 0;
  bool has_answers_ = false;
  std::vector<prompt_item> eval_;
};

}  // namespace zf::rl
