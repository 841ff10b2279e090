#include "runtime/rl/prompts.hpp"

#include <algorithm>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/rl/rollout.hpp"

namespace zf::rl {

prompt_item prompt_source::item(const std::string& prompt, const std::string& answer) const {
  prompt_item p{prompt, answer, {}};
  std::lock_guard lk(*mu_);
  p.ids = tok_->encode_prompt(prompt);
  if (p.ids.empty()) fail("rl: prompt '{}' has no tokens", prompt);
  return p;
}

prompt_source prompt_source::from_task(std::shared_ptr<const task> t, const tokenizer& tok,
                                       uint64_t seed, int per_step, int eval_count) {
  prompt_source s;
  s.task_ = std::move(t);
  s.tok_ = std::make_shared<tokenizer>(tok);
  s.mu_ = std::make_shared<std::mutex>();
  s.seed_ = seed;
  s.per_step_ = per_step;
  // Training draws seed_of(seed, step, i); evaluation a stream of its own.
  for (auto& smp : make_samples(*s.task_, seed ^ 0x5eed0e7a1ull, eval_count))
    s.eval_.push_back(s.item(smp.prompt, smp.answer));
  // The longest prompt a task makes: its longest strings (a prompt's length depends only on them).
  task_options o = s.task_->options();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 256; ++i)
    s.longest_ = std::max<int>(s.longest_, s.item(s.task_->make(rng).prompt, "").ids.size());
  for (auto& e : s.eval_) s.longest_ = std::max<int>(s.longest_, e.ids.size());
  (void)o;
  return s;
}

prompt_source prompt_source::from_records(std::vector<prompt_record> records, const tokenizer& tok,
                                          uint64_t seed, int per_step, int eval_count) {
  prompt_source s;
  s.tok_ = std::make_shared<tokenizer>(tok);
  s.mu_ = std::make_shared<std::mutex>();
  s.seed_ = seed;
  s.per_step_ = per_step;
  if (eval_count >= static_cast<int>(records.size()))
    fail("rl: {} prompts leave none to train on after {} held out (rlhf.eval_prompts)",
         records.size(), eval_count);
  for (auto it = records.end() - eval_count; it != records.end(); ++it)
    s.eval_.push_back(s.item(it->prompt, it->answer));
  records.resize(records.size() - eval_count);
  for (auto& r : records) {
    s.has_answers_ = s.has_answers_ || !r.answer.empty();
    s.longest_ = std::max<int>(s.longest_, s.item(r.prompt, "").ids.size());
  }
  for (auto& e : s.eval_) s.longest_ = std::max<int>(s.longest_, e.ids.size());
  s.records_ = std::move(records);
  return s;
}

std::vector<prompt_item> prompt_source::step(int st) const {
  std::vector<prompt_item> out;
  out.reserve(per_step_);
  if (task_) {
    for (int i = 0; i < per_step_; ++i) {
      std::mt19937_64 rng(seed_of(seed_, st, i));
      const task_sample smp = task_->make(rng);
      out.push_back(item(smp.prompt, smp.answer));
    }
    return out;
  }
  // Records in a seeded permutation per epoch: prompt k of the run is record perm_e[k % n].
  const int64_t n = static_cast<int64_t>(records_.size());
  std::vector<int> perm;
  int64_t epoch = -1;
  for (int i = 0; i < per_step_; ++i) {
    const int64_t k = int64_t(st) * per_step_ + i;
    if (k / n != epoch) {
      epoch = k / n;
      perm.resize(n);
      for (int64_t j = 0; j < n; ++j) perm[j] = static_cast<int>(j);
      std::mt19937_64 rng(seed_of(seed_, -1, static_cast<int>(epoch)));
      for (int64_t j = n - 1; j > 0; --j) std::swap(perm[j], perm[rng() % (j + 1)]);
    }
    const prompt_record& r = records_[perm[k % n]];
    out.push_back(item(r.prompt, r.answer));
  }
  return out;
}

double prompt_source::rule_reward(const prompt_item& p, std::string_view completion) const {
  if (task_) return task_->reward(task_sample{p.prompt, p.answer}, completion);
  return p.answer.empty() ? 0.0 : match_reward(p.answer, completion);
}

}  // namespace zf::rl
