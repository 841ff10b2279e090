#pragma once
// Rollouts as the trainer consumes them: each sampled completion with the engine's log-probs and
// the weights version that produced it, grouped by prompt, and their packing into the model's
// [b, t] training rows. A sequence's row is prompt + response: input ids = row[0..t), targets
// the next token, -1 on the prompt and on padding, so the response's token j is predicted at row
// position prompt_len - 1 + j (where forward_rl puts its log-prob and a critic its value).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace zf::rl {

struct rollout_seq {
  int prompt_index = 0;       // which prompt of its step
  std::vector<int> prompt;    // token ids
  std::vector<int> response;  // generated ids, the end-of-text token included when sampled
  std::vector<float> logp;    // [response.size()] the rollout engine's log-probs
  std::string text;           // the response's text (end-of-text removed)
  uint64_t version = 0;       // weights version that generated it
  bool finished = false;      // ended by end-of-text (else cut at max_new_tokens)
};

struct rollout_batch {
  int step = 0;                   // the update it is for
  uint64_t version = 0;           // weights version it was generated with
  std::vector<rollout_seq> seqs;  // prompts_per_step groups of group_size, group by group
  double gen_s = 0;               // wall seconds the engine took for it
  double wait_s = 0;              // seconds the rollout worker waited for that version first
  double sync_s = 0;              // seconds to swap those weights into the engine
  // Filled by the frozen roles right after generation (off the trainer's thread, see
  // runtime/rl/rollout's scorer) when `scored`; else the trainer scores the batch itself.
  bool scored = false;
  std::vector<float> ref_logp;   // [tokens] reference log-probs, sequence by sequence; empty: none
  std::vector<float> rewards;    // [seqs.size()]
  double true_reward_mean = -1;  // the rule reward's mean (-1: no rule)
  double score_s = 0;            // seconds the scoring took
};

// Sequences [begin, end) of seqs packed into [b = end - begin, t] rows (t >= the longest
// prompt + response - 1; shorter rows padded with id 0 and target -1).
struct packed_batch {
  int b = 0, t = 0;
  std::vector<int> ids, targets;  // [b, t]
  std::vector<int> first;         // [b] row position of each response's first target
  std::vector<int> len;           // [b] response tokens
  int tokens() const;             // sum of len
};
void pack(std::span<const rollout_seq> seqs, int t, packed_batch& out);
// The longest prompt + response - 1 of seqs: the t pack needs.
int packed_length(std::span<const rollout_seq> seqs);

// rows [b*t] (per-position values from forward_rl) -> flat [tokens()] in sequence order, and back
// (scatter zeroes every position that is not a response token).
void gather_response(const packed_batch& p, const float* rows, float* flat);
void scatter_response(const packed_batch& p, const float* flat, float* rows);

}  // namespace zf::rl
