#pragma once
// TLS between the launcher (`zeroflow launch --nodes`) and node agents (`zeroflow node`), with
// CAF 0.17's OpenSSL module. Both ends present a certificate and accept only a peer whose
// certificate the shared CA signed (CAF sets SSL_VERIFY_PEER | FAIL_IF_NO_PEER_CERT once
// openssl.certificate, openssl.key and openssl.cafile are set); CAF does not check host names,
// so the CA alone says who belongs to the cluster. The token check stays on top.
//
// Every choice between plain and TLS is made here: configure with use_cluster_tls, publish with
// publish_agent, connect with connect_agent. A build without CAF's OpenSSL module
// (ZF_HAVE_CAF_OPENSSL unset: the TSan build's instrumented CAF) refuses TLS with a clear error.
#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "actors/cluster_protocol.hpp"

namespace zf::actors {

// The PEM files of one end; all empty = plain TCP.
struct cluster_tls {
  std::string cert;  // this end's certificate (chain), signed by `ca`
  std::string key;   // its private key, unencrypted, mode 600
  std::string ca;    // the CA every peer's certificate must be signed by
  bool enabled() const { return !cert.empty(); }
};

// True when this binary was built with CAF's OpenSSL module.
bool cluster_tls_available();

// The TLS set-up from --tls-cert, --tls-key and --tls-ca (`flag_prefix` + "cert" etc. name them
// in errors). All empty: plain. zf::error when only some are given (naming the missing ones),
// when this build has no TLS, when a file is missing, unreadable or not PEM, when the key is
// encrypted, readable by others, or not the certificate's, or when the certificate is not signed
// by the CA or may not serve as both TLS client and server.
cluster_tls load_cluster_tls(const std::string& cert, const std::string& key, const std::string& ca,
                             const std::string& flag_prefix = "--tls-");

// After configure_cluster(c): with TLS, loads CAF's OpenSSL module and sets its openssl.*
// options (the config must outlive the actor system, which reads them per connection). Plain:
// nothing. zf::error when TLS is asked of a build without it.
void use_cluster_tls(caf::actor_system_config& c, const cluster_tls& tls);

// Publishes an agent on host:port (host nullptr = every address) with TLS or plain TCP. With
// TLS, `sys` must have been configured by use_cluster_tls. Returns the bound port.
caf::expected<uint16_t> publish_agent(caf::actor_system& sys, const cluster_tls& tls,
                                      const node_agent_actor& agent, uint16_t port,
                                      const char* host);

// The agent at host:port, with TLS or plain TCP, or an error within `timeout`: a plain client
// waits forever on a TLS agent (each waits for the other to speak first), hence the limit.
caf::expected<node_agent_actor> connect_agent(caf::actor_system& sys, const cluster_tls& tls,
                                              const std::string& host, uint16_t port,
                                              std::chrono::milliseconds timeout);

}  // namespace zf::actors
