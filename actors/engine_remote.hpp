#pragma once
// A serving engine in another process of this host, behind serve::completion_backend: an RLHF
// run's rollout engine placed out of the trainer's process (rlhf.rollout_placement = "process").
//
//   trainer process                                 engine process (`zeroflow engine-host`)
//   remote backend --- CAF (submit, cancel, ---->   engine host actor -> actors/engine
//        ^              weights version)                  |
//        +-------- CAF (events, in order) <---------------+
//   weights: Gloo broadcast, rank 0 -> rank 1, in buckets of `bucket_bytes`, versioned
//
// The child is started by spawn_engine_process with a private rendezvous folder (0700) and a
// secret; it listens on loopback only and dies with its parent. When it dies (killed, crashed,
// out of memory), every request in flight ends with finish_reason::error and a message naming the
// engine, its process and how it ended; later requests and weight updates answer 503 with the
// same message. The engine serves the same bits as in the trainer's process (batch_invariant),
// so a run is the same whichever side its engine runs on.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::actors {

struct engine_process_options {
  std::string name = "rollout engine";   // how errors name it
  std::string executable;                // the zeroflow binary ("" = this one)
  std::filesystem::path tokenizer_file;  // tokenizer.json (tokenizer_config.json beside it)
  std::filesystem::path work_dir;        // the rendezvous folder goes here, removed once joined
  std::size_t bucket_bytes = 32u << 20;  // weights per broadcast
  std::chrono::seconds start_timeout{120};
};

// Starts the engine process serving `first` as version 0 and connects to it; zf::error naming
// the engine when it cannot start (it exited, or did not answer within start_timeout). `tok` is
// this side's copy (encode, token_bytes).
std::unique_ptr<serve::completion_backend> spawn_engine_process(
    std::shared_ptr<const lm_weights> first, tokenizer tok, const engine_config& c,
    const engine_process_options& o);

// The child's main (`zeroflow engine-host --rendezvous DIR`, secret in ZF_ENGINE_SECRET): serves
// one client until it goes away. Returns the exit code.
int run_engine_host(const std::filesystem::path& rendezvous_dir);

}  // namespace zf::actors
