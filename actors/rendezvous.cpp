#include "actors/rendezvous.hpp"

#include <algorithm>
#include <caf/io/all.hpp>
#include <map>
#include <optional>
#include <thread>

#include "actors/cluster_protocol.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {
namespace {

struct kv_state {
  std::map<std::string, std::vector<char>> values;
  std::multimap<std::string, caf::typed_response_promise<std::vector<char>>> waiting;
};

bool same_secret(const std::string& a, const std::string& b) {  // time independent of where
  unsigned diff = a.size() != b.size();                         // they differ
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) diff |= unsigned(a[i] ^ b[i]);
  return diff == 0;
}

kv_actor::behavior_type kv_server(kv_actor::stateful_pointer<kv_state> self, std::string secret) {
  return {
      [self, secret](kv_set_atom, const std::string& s, const std::string& k,
                     const std::vector<char>& v) -> caf::result<bool> {
        if (!same_secret(s, secret)) return caf::make_error(caf::sec::invalid_argument);
        auto& st = self->state;
        st.values[k] = v;
        auto [b, e] = st.waiting.equal_range(k);
        for (auto it = b; it != e; ++it) it->second.deliver(v);
        st.waiting.erase(b, e);
        return true;
      },
      [self, secret](kv_get_atom, const std::string& s,
                     const std::string& k) -> caf::result<std::vector<char>> {
        if (!same_secret(s, secret)) return caf::make_error(caf::sec::invalid_argument);
        auto& st = self->state;
        if (auto it = st.values.find(k); it != st.values.end()) return it->second;
        auto p = self->make_response_promise<std::vector<char>>();
        st.waiting.emplace(k, p);
        return p;
      },
  };
}

class caf_store : public comm::kv_store {
  static constexpr std::chrono::milliseconds kAsk{1000};

 public:
  caf_store(caf::actor_system& sys, kv_actor server, std::string where, bool owner,
            std::string secret)
      : sys_(sys),
        server_(std::move(server)),
        where_(std::move(where)),
        owner_(owner),
        secret_(std::move(secret)) {}
  ~caf_store() override {
    // the actor system waits for every actor at shutdown: the owner ends the server
    if (owner_) caf::anon_send_exit(server_, caf::exit_reason::user_shutdown);
  }
  // Every request is asked again each second (kAsk), and between asks the store checks that
  // rank 0 is still there (a monitor on its proxy: the down message comes when the connection
  // drops). A request already sent to rank 0 is never answered when rank 0 dies, and CAF
  // quietly drops new ones to the dead proxy, so without this a rank waiting here (a checkpoint
  // commit: up to 10 minutes) would wait out its whole timeout. Both requests are idempotent: a
  // set repeated stores the same value, a key set meanwhile answers the next get.
  void set(const std::string& key, const std::vector<char>& value) override {
    ask<bool>(key, std::chrono::seconds(60), "set", kv_set_atom::value, secret_, key, value);
  }
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override {
    return ask<std::vector<char>>(key, timeout, "get", kv_get_atom::value, secret_, key);
  }

 private:
  template <class Reply, class... Ts>
  Reply ask(const std::string& key, std::chrono::milliseconds timeout, const char* what,
            const Ts&... xs) {
    caf::scoped_actor self{sys_};
    self->monitor(server_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      std::optional<Reply> out;
      caf::error err;
      self->request(server_, std::clamp(left, std::chrono::milliseconds(1), kAsk), xs...)
          .receive([&](Reply& v) { out = std::move(v); },
                   [&](caf::error& e) { err = std::move(e); });
      if (out) return std::move(*out);
      refused(err);
      bool down = false;
      self->receive([&](const caf::down_msg&) { down = true; },
                    caf::after(std::chrono::milliseconds(0)) >> [] {});
      if (down) fail("rendezvous {}: rank 0 is gone ({} '{}')", where_, what, key);
      if (err != caf::sec::request_timeout)
        fail("rendezvous {}: rank 0 is gone ({} '{}': {})", where_, what, key, sys_.render(err));
      if (left <= kAsk)
        fail("rendezvous {}: no value for '{}' within {} ms; did every rank start?", where_, key,
             timeout.count());
    }
  }
  void refused(const caf::error& e) const {
    if (e == caf::sec::invalid_argument)
      fail("rendezvous {}: refused by rank 0: this process's ZF_JOB_SECRET is not the job's",
           where_);
  }
  caf::actor_system& sys_;
  kv_actor server_;
  std::string where_;
  bool owner_;
  std::string secret_;
};

}  // namespace

std::shared_ptr<comm::kv_store> open_rendezvous(caf::actor_system& sys, const process_env& env,
                                                std::chrono::seconds timeout) {
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  if (env.rank == 0) {
    auto server = sys.spawn(kv_server, env.job_secret);
    // MASTER_ADDR's interface only (loopback for one host), not every interface
    auto port = sys.middleman().publish(server, static_cast<uint16_t>(env.master_port),
                                        env.master_addr.c_str(), true);
    if (!port)
      fail("rendezvous: rank 0 cannot listen on port {}: {}", env.master_port,
           sys.render(port.error()));
    return std::make_shared<caf_store>(sys, server, where, true, env.job_secret);
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto h = sys.middleman().remote_actor<kv_actor>(env.master_addr,
                                                    static_cast<uint16_t>(env.master_port));
    if (h) return std::make_shared<caf_store>(sys, *h, where, false, env.job_secret);
    if (std::chrono::steady_clock::now() > deadline)
      fail("rendezvous: rank {} cannot reach rank 0 at {} within {} s: {}", env.rank, where,
           timeout.count(), sys.render(h.error()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace zf::actors
