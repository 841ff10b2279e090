#pragma once
// The cluster area's control plane: the messages and typed-actor interfaces between the
// processes of one launch. Today that is the rank table (rendezvous): rank 0 hosts a key-value
// actor, every rank reaches it as a CAF remote actor. Every type here crosses processes, so
// each is a plain serialisable value (no handles).
#include <caf/all.hpp>
#include <string>
#include <vector>

namespace zf::actors {

using kv_set_atom = caf::atom_constant<caf::atom("zf_kvset")>;  // store a value, reply when kept
using kv_get_atom = caf::atom_constant<caf::atom("zf_kvget")>;  // reply once the key is set

// The rendezvous store: get waits (a response promise) until some rank sets the key. Every
// request carries the job's secret first (process_env::job_secret); a wrong one is refused
// with sec::invalid_argument, and nothing is stored or revealed.
using kv_actor = caf::typed_actor<
    caf::replies_to<kv_set_atom, std::string, std::string, std::vector<char>>::with<bool>,
    caf::replies_to<kv_get_atom, std::string, std::string>::with<std::vector<char>>>;

}  // namespace zf::actors
