#pragma once
// The user's own RL data: JSON-lines files, one JSON object per line, UTF-8.
//
//   prompts      {"prompt": "reverse abc=", "answer": "cba"}     answer optional
//   SFT pairs    {"prompt": "reverse abc=", "response": "cba"}
//   preferences  {"prompt": "...", "chosen": "...", "rejected": "..."}
//
// Blank (whitespace-only) lines are skipped; a UTF-8 byte-order mark at the start and a CR
// before each LF are tolerated; keys other than the ones above are ignored (datasets carry ids,
// sources...). Everything else is refused before any training starts, with a zf::error whose
// message starts "FILE:LINE: " (LINE 1-based) and says what was wrong: a line longer than 1 MiB,
// invalid UTF-8, malformed JSON (with the parser's reason), a value that is not an object, a
// missing key or one that is not a string (naming the key), an empty prompt / response / chosen /
// rejected / answer, chosen identical to rejected. A file that cannot be read: an error naming it;
// a file without records: "FILE: no records".
//
// "answer": when present, a rule reward checks the completion against it (match_reward,
// tasks.hpp); null or absent both mean "no answer" (answer == ""), and "" itself is refused so
// that an empty answer always means absent.
//
// The *_from_task adapters give the same records from a built-in task, so the RL loop treats
// tasks and files alike; their records have line 0 (not from a file).
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "runtime/rl/tasks.hpp"

namespace zf::rl {

struct prompt_record {
  std::string prompt;
  std::string answer;  // "" when the line has none
  int line = 0;        // 1-based line in its file; 0 when made from a task
};

struct sft_record {
  std::string prompt, response;
  int line = 0;
};

struct preference_record {
  std::string prompt, chosen, rejected;  // chosen != rejected
  int line = 0;
};

inline constexpr std::size_t kMaxLineBytes = std::size_t{1} << 20;  // 1 MiB, without the newline

std::vector<prompt_record> read_prompts(const std::filesystem::path& file);
std::vector<sft_record> read_sft(const std::filesystem::path& file);
std::vector<preference_record> read_preferences(const std::filesystem::path& file);

// make_samples(t, seed, count) as records: answer = the task's answer.
std::vector<prompt_record> prompts_from_task(const task& t, std::uint64_t seed, int count);
// response = the task's answer.
std::vector<sft_record> sft_from_task(const task& t, std::uint64_t seed, int count);
// A wrong answer, never equal to `answer` (non-empty), of one of k_mistake_kinds kinds (kind %
// k_mistake_kinds), positions drawn from rng: 0 the answer reversed ("abc" for reverse's "cba":
// copying instead of reversing; "91" for "19"), 1 one character replaced by the next of its class
// (letter within the task's `letters`, digit, other), 2 two replaced, 3 two neighbours swapped,
// 4 one dropped, 5 one inserted, 6 cut short, 7 random characters of the answer's class of a
// random length. A kind that changes nothing (a palindrome, one character) falls back to kind 1.
inline constexpr std::size_t k_mistake_kinds = 8;
std::string mistake(const std::string& answer, std::size_t kind, std::mt19937_64& rng, int letters);

// chosen = the answer; rejected = mistake(answer, i, ...) for sample i: every kind in turn, the
// wide spread of errors a reward model needs to judge a sampling policy's outputs (trained on one
// kind only, it rates what it never saw, e.g. a cut-short answer, at random, and PPO exploits it).
std::vector<preference_record> preferences_from_task(const task& t, std::uint64_t seed, int count);

}  // namespace zf::rl
