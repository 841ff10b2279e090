#pragma once
// A serving engine in another process (actors/engine_remote.hpp): the messages between the
// client (an RLHF trainer) and the engine host. Control on CAF, typed; weights on the data plane
// (a two-rank Gloo group, broadcast from the client in buckets), never through CAF.
//   client -> host  hello    the model spec, the engine config, the tokenizer file, where to send
//                            events; then version 0's weights follow on the data plane
//                   submit   a request under the client's id -> the engine's submit_result
//                   cancel   the client's id
//                   weights  a version and its size; the weights follow on the data plane ->
//                            the swap's weights_result (between two engine steps)
//                   metrics  -> the engine's Prometheus text
//   host -> client  event    batches of (client id, completion_event), in order
// Every request to the host carries the session's secret (the host refuses it otherwise); the
// host listens on loopback only and ends when its client goes away.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <cstdint>
#include <string>

#include "runtime/core/config.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/serve/serving.hpp"

namespace zf {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rope_scaling& x) {
  return f(caf::meta::type_name("zf_rope_scaling"), x.type, x.factor, x.low_freq_factor,
           x.high_freq_factor, x.original_max_positions);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, model_spec& x) {
  return f(caf::meta::type_name("zf_model_spec"), x.arch, x.name, x.vocab_size, x.hidden, x.n_layer,
           x.n_head, x.n_kv_head, x.head_dim, x.intermediate, x.max_positions, x.norm_eps,
           x.rope_theta, x.rope, x.tied_head, x.attn_bias, x.value_head, x.bos_id, x.eos_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, engine_config& x) {
  return f(caf::meta::type_name("zf_engine_config"), x.policy, x.token_budget, x.max_seqs,
           x.block_size, x.kv_blocks, x.max_queue, x.threads, x.prefix_caching, x.batch_invariant);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  return f(caf::meta::type_name("zf_sampling"), x.temperature, x.top_k, x.top_p, x.seed, x.logprobs,
           x.presence_penalty, x.frequency_penalty, x.repetition_penalty, x.logit_bias);
}

}  // namespace zf

namespace zf::serve {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, completion_request& x) {
  return f(caf::meta::type_name("zf_completion_request"), x.prompt, x.max_tokens, x.sampling,
           x.stop, x.n, x.ignore_eos);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_logprob& x) {
  return f(caf::meta::type_name("zf_token_logprob"), x.token, x.logprob);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, position_logprobs& x) {
  return f(caf::meta::type_name("zf_position_logprobs"), x.chosen, x.top);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, completion_event& x) {
  return f(caf::meta::type_name("zf_completion_event"), x.request_id, x.index, x.text, x.tokens,
           x.logprobs, x.finish, x.prompt_tokens, x.completion_tokens, x.error, x.weights_version);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, submit_result& x) {
  return f(caf::meta::type_name("zf_submit_result"), x.id, x.status, x.retry_after_s, x.message);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, weights_result& x) {
  return f(caf::meta::type_name("zf_weights_result"), x.status, x.version, x.message);
}

}  // namespace zf::serve

namespace zf::actors {

// What the host needs to build its engine; version 0's weights follow on the data plane.
struct engine_hello {
  model_spec spec;
  engine_config engine;
  std::string tokenizer_file;  // a tokenizer.json this host can read
  uint64_t bucket_floats = 0;  // weights move in broadcasts of this many floats
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, engine_hello& x) {
  return f(caf::meta::type_name("zf_engine_hello"), x.spec, x.engine, x.tokenizer_file,
           x.bucket_floats);
}

// Events of many requests (ids[i] is events[i]'s client id), in the order the engine made them:
// the host coalesces what its engine produced meanwhile into one message.
struct event_batch {
  std::vector<uint64_t> ids;
  std::vector<serve::completion_event> events;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_batch& x) {
  return f(caf::meta::type_name("zf_event_batch"), x.ids, x.events);
}

using rhello_atom = caf::atom_constant<caf::atom("zf_rhello")>;
using rsubmit_atom = caf::atom_constant<caf::atom("zf_rsubmit")>;
using rcancel_atom = caf::atom_constant<caf::atom("zf_rcancel")>;
using rweights_atom = caf::atom_constant<caf::atom("zf_rweight")>;
using rmetrics_atom = caf::atom_constant<caf::atom("zf_rmetric")>;
using revent_atom = caf::atom_constant<caf::atom("zf_revent")>;
using rflush_atom = caf::atom_constant<caf::atom("zf_rflush")>;

// The host. The first string of every message is the session's secret; the caf::actor of hello
// receives (revent_atom, event_batch).
using engine_host_actor = caf::typed_actor<
    caf::replies_to<rhello_atom, std::string, caf::actor,
                    engine_hello>::with<serve::weights_result>,
    caf::replies_to<rsubmit_atom, std::string, uint64_t,
                    serve::completion_request>::with<serve::submit_result>,
    caf::reacts_to<rcancel_atom, std::string, uint64_t>,
    caf::replies_to<rweights_atom, std::string, uint64_t>::with<serve::weights_result>,
    caf::replies_to<rmetrics_atom, std::string>::with<std::string>>;

// Both ends' actor system: the middleman, the types above announced, and one scheduler thread
// (the engine and the trainer compute on threads of their own; more CAF workers would only poll
// for messages on the cores they use).
inline void configure_engine_remote(caf::actor_system_config& c) {
  c.load<caf::io::middleman>();
  c.set("scheduler.max-threads", 1);
  c.set("logger.verbosity", caf::atom("quiet"));
  c.add_message_type<engine_hello>("zf_engine_hello");
  c.add_message_type<serve::completion_request>("zf_completion_request");
  c.add_message_type<event_batch>("zf_event_batch");
  c.add_message_type<serve::submit_result>("zf_submit_result");
  c.add_message_type<serve::weights_result>("zf_weights_result");
}

}  // namespace zf::actors
