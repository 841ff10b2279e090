#include "actors/cluster_tls.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <caf/io/all.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "runtime/core/error.hpp"

#ifdef ZF_HAVE_CAF_OPENSSL
#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <caf/openssl/all.hpp>

// CAF 0.17's OpenSSL module (libcaf_openssl, session.cpp) reads and writes with SSL_read and
// SSL_write and asks SSL_get_error what a -1 meant, but never empties the thread's OpenSSL error
// queue, which SSL_get_error consults first. One failed connection (a stranger's rejected
// handshake, a killed peer's "unexpected eof") leaves its error there, and the next ordinary
// "would block" on ANY other connection of that network thread reads as fatal: the agent drops
// its launcher (and stops the job), the launcher drops every surviving agent. OpenSSL documents
// that the queue must be empty before each TLS I/O call; these definitions, which the dynamic
// linker binds libcaf_openssl's (and every other caller's) SSL_read and SSL_write to, empty it
// and call OpenSSL's own. Handshakes need nothing: OpenSSL empties the queue itself there.
// Tested: tests/actors/test_node_agent_tls.cpp, "leaves other connections alone".
namespace {
template <class F>
F next_symbol(const char* name) {
  void* f = ::dlsym(RTLD_NEXT, name);
  if (!f) std::abort();  // libssl is linked in: its symbols exist
  return reinterpret_cast<F>(f);
}
}  // namespace

extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = next_symbol<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

extern "C" int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = next_symbol<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}
#endif

namespace zf::actors {
namespace {

const char* const no_tls =
    "this zeroflow was built without CAF's OpenSSL module (libcaf_openssl), so it has no TLS; "
    "rebuild against a CAF that has it (Debian: libcaf-openssl0.17, libssl-dev)";

caf::error tls_error(std::string why) {
  return caf::make_error(caf::sec::runtime_error, std::move(why));
}

// A readable regular file, as an absolute path (CAF reopens it for every connection, so a
// later change of directory must not lose it). A private key must be its owner's alone.
std::string checked_file(const std::string& flag, const std::string& path, bool secret) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    fail("{} {}: cannot open: {}", flag, path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("{} {}: not a regular file", flag, path);
  if (secret && (st.st_mode & 077) != 0)
    fail(
        "{} {} can be read or written by others than its owner (mode {:04o}): a private key "
        "others can read is no secret; run `chmod 600 {}`",
        flag, path, st.st_mode & 07777, path);
  return std::filesystem::absolute(path).lexically_normal().string();
}

#ifdef ZF_HAVE_CAF_OPENSSL

// OpenSSL's queued errors as one line (and the queue emptied).
std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// An encrypted key would make OpenSSL ask on the terminal, inside CAF's network thread.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

// "" when the context's certificate verifies against its CA store for `purpose`, else why not.
std::string verify_own(SSL_CTX* ctx, int purpose) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(ctx, &chain);
  X509_STORE_CTX* v = X509_STORE_CTX_new();
  if (!v) return "out of memory";
  std::string why;
  if (X509_STORE_CTX_init(v, SSL_CTX_get_cert_store(ctx), leaf, chain) != 1 ||
      X509_STORE_CTX_set_purpose(v, purpose) != 1)
    why = ssl_errors();
  else if (X509_verify_cert(v) != 1)
    why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(v));
  X509_STORE_CTX_free(v);
  return why;
}

// Loads the three files as CAF will (certificate chain, key, CA file) and checks that they fit
// together, so a bad file is named here and not by a failed handshake or an exception in CAF's
// network thread.
void check_with_openssl(const cluster_tls& t, const std::string& p) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (!ctx) fail("TLS: cannot create an OpenSSL context: {}", ssl_errors());
  struct ctx_guard {
    SSL_CTX* c;
    ~ctx_guard() { SSL_CTX_free(c); }
  } guard{ctx};
  if (SSL_CTX_use_certificate_chain_file(ctx, t.cert.c_str()) != 1)
    fail("{}cert {}: not a PEM certificate: {}", p, t.cert, ssl_errors());
  EVP_PKEY* pkey = nullptr;
  if (BIO* bio = BIO_new_file(t.key.c_str(), "r")) {
    pkey = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
    BIO_free(bio);
  }
  if (!pkey) fail("{}key {}: not an unencrypted PEM private key: {}", p, t.key, ssl_errors());
  const bool matches = SSL_CTX_use_PrivateKey(ctx, pkey) == 1;  // checks it against the cert
  EVP_PKEY_free(pkey);
  if (!matches) fail("{}key {} is not the key of {}cert {}: {}", p, t.key, p, t.cert, ssl_errors());
  if (SSL_CTX_load_verify_locations(ctx, t.ca.c_str(), nullptr) != 1)
    fail("{}ca {}: no PEM CA certificate in it: {}", p, t.ca, ssl_errors());
  // Each end is a TLS server to some peers and a client to others (agents accept, launchers
  // connect), and both verify: the certificate must pass as either.
  for (auto [purpose, role] : {std::pair{X509_PURPOSE_SSL_SERVER, "TLS server"},
                               std::pair{X509_PURPOSE_SSL_CLIENT, "TLS client"}}) {
    const std::string why = verify_own(ctx, purpose);
    if (!why.empty())
      fail("{}cert {} does not verify against {}ca {} as a {}: {}", p, t.cert, p, t.ca, role, why);
  }
}

#endif

}  // namespace

bool cluster_tls_available() {
#ifdef ZF_HAVE_CAF_OPENSSL
  return true;
#else
  return false;
#endif
}

cluster_tls load_cluster_tls(const std::string& cert, const std::string& key, const std::string& ca,
                             const std::string& flag_prefix) {
  const auto& p = flag_prefix;
  if (cert.empty() && key.empty() && ca.empty()) return {};
  std::vector<std::string> missing;
  if (cert.empty()) missing.push_back(p + "cert");
  if (key.empty()) missing.push_back(p + "key");
  if (ca.empty()) missing.push_back(p + "ca");
  if (!missing.empty())
    fail("TLS needs {0}cert, {0}key and {0}ca together: {1} missing", p,
         fmt::join(missing, " and "));
  if (!cluster_tls_available()) fail("{0}cert/{0}key/{0}ca: {1}", p, no_tls);
  cluster_tls t;
  t.cert = checked_file(p + "cert", cert, false);
  t.key = checked_file(p + "key", key, true);
  t.ca = checked_file(p + "ca", ca, false);
#ifdef ZF_HAVE_CAF_OPENSSL
  check_with_openssl(t, p);
#endif
  return t;
}

void use_cluster_tls(caf::actor_system_config& c, const cluster_tls& tls) {
  if (!tls.enabled()) return;
#ifdef ZF_HAVE_CAF_OPENSSL
  c.load<caf::openssl::manager>();  // after the middleman (configure_cluster): it needs it
  c.set("openssl.certificate", tls.cert);
  c.set("openssl.key", tls.key);
  c.set("openssl.cafile", tls.ca);
#else
  (void)c;
  fail("TLS: {}", no_tls);
#endif
}

caf::expected<uint16_t> publish_agent(caf::actor_system& sys, const cluster_tls& tls,
                                      const node_agent_actor& agent, uint16_t port,
                                      const char* host) {
  if (!tls.enabled()) return sys.middleman().publish(agent, port, host, true);
#ifdef ZF_HAVE_CAF_OPENSSL
  if (!sys.has_openssl_manager())
    return tls_error("TLS asked for, but the actor system was set up without use_cluster_tls");
  return caf::openssl::publish(agent, port, host, true);
#else
  (void)sys, (void)agent, (void)port, (void)host;
  return tls_error(no_tls);
#endif
}

caf::expected<node_agent_actor> connect_agent(caf::actor_system& sys, const cluster_tls& tls,
                                              const std::string& host, uint16_t port,
                                              std::chrono::milliseconds timeout) {
  // What caf::openssl::remote_actor and middleman::remote_actor do, with a time limit.
  caf::io::middleman_actor mm;
  if (!tls.enabled()) {
    mm = sys.middleman().actor_handle();
  } else {
#ifdef ZF_HAVE_CAF_OPENSSL
    if (!sys.has_openssl_manager())
      return tls_error("TLS asked for, but the actor system was set up without use_cluster_tls");
    mm = sys.openssl_manager().actor_handle();
#else
    return tls_error(no_tls);
#endif
  }
  auto f = caf::make_function_view(mm, caf::duration{timeout});
  auto res = f(caf::connect_atom::value, host, port);
  if (!res) return std::move(res.error());
  auto& ptr = std::get<1>(*res);
  if (!ptr) return caf::make_error(caf::sec::no_actor_published_at_port, port);
  if (!sys.assignable<node_agent_actor>(std::get<2>(*res)))
    return caf::make_error(caf::sec::unexpected_actor_messaging_interface);
  return caf::actor_cast<node_agent_actor>(std::move(ptr));
}

}  // namespace zf::actors
