// The engine process's side of actors/engine_remote.hpp: one detached actor that owns the engine
// and the data-plane end, serving one client (the trainer that started this process).
#include <fmt/format.h>

#include <caf/io/all.hpp>
#include <cstdlib>
#include <future>
#include <iostream>
#include <map>
#include <mutex>

#include "actors/engine.hpp"
#include "actors/engine_remote.hpp"
#include "actors/engine_remote_protocol.hpp"
#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/model/layout.hpp"

namespace zf::actors {
namespace {

using comm_future = std::shared_future<std::shared_ptr<comm::communicator>>;

struct host_state {
  std::string secret;
  comm_future comm_ready;
  std::shared_ptr<comm::communicator> comm;
  engine_hello hello;
  std::unique_ptr<serve::completion_backend> engine;
  caf::actor client;
  caf::actor forwarder;  // batches events for the client (event_forwarder)
  // The version served and the one it replaced (its buffer is reused once the engine let go).
  std::shared_ptr<lm_weights> current, spare;
  // Client id -> engine id of the requests still running (for cancel); the engine's thread
  // erases an entry when the request's last choice ends.
  std::shared_ptr<std::mutex> ids_mu = std::make_shared<std::mutex>();
  std::shared_ptr<std::map<uint64_t, uint64_t>> ids =
      std::make_shared<std::map<uint64_t, uint64_t>>();
};

// One version's weights from the data plane: [layout total] floats broadcast by rank 0 in
// buckets of hello.bucket_floats, into the spare version's buffer when nothing else holds it.
std::shared_ptr<lm_weights> receive_weights(host_state& st) {
  const std::size_t total = make_layout(st.hello.spec).total;
  fbuffer flat;
  if (st.spare && st.spare.use_count() == 1) flat = std::move(st.spare->store);
  st.spare.reset();
  if (flat.size() != total) flat = fbuffer(total);
  comm::broadcast_buckets(*st.comm, flat.data(), total, st.hello.bucket_floats, 0);
  return std::make_shared<lm_weights>(make_lm_weights(st.hello.spec, std::move(flat)));
}

// Passes the engine's events on to the client, what arrived meanwhile in one message: a flush
// queued behind the first event of a batch goes out once the events before it are in.
caf::behavior event_forwarder(caf::event_based_actor* self, caf::actor client) {
  auto buf = std::make_shared<event_batch>();
  return {
      [self, buf](revent_atom, uint64_t cid, serve::completion_event& e) {
        if (buf->ids.empty()) self->send(self, rflush_atom::value);
        buf->ids.push_back(cid);
        buf->events.push_back(std::move(e));
      },
      [self, buf, client](rflush_atom) {
        self->send(client, revent_atom::value, std::move(*buf));
        *buf = event_batch{};
      },
  };
}

// The sink of one client request: its events go to the forwarder (in this process: no copy
// through a serializer), the last one forgets the request's id.
serve::event_sink forward_events(host_state& st, uint64_t cid, int choices) {
  auto left = std::make_shared<int>(choices);
  return [fwd = st.forwarder, cid, left, mu = st.ids_mu,
          ids = st.ids](const serve::completion_event& e) {
    caf::anon_send(fwd, revent_atom::value, cid, e);
    if (e.finish != serve::finish_reason::none && --*left == 0) {
      std::lock_guard lk(*mu);
      ids->erase(cid);
    }
  };
}

serve::weights_result refused(int status, const std::string& why) {
  return {status, 0, why};
}

engine_host_actor::behavior_type engine_host(engine_host_actor::stateful_pointer<host_state> self,
                                             std::string secret, comm_future comm_ready) {
  self->state.secret = std::move(secret);
  self->state.comm_ready = std::move(comm_ready);
  self->set_down_handler([self](const caf::down_msg&) { self->quit(); });  // the client left
  auto fatal = [self](const std::exception& e) {
    std::cerr << "engine-host: " << e.what() << "\n";
    self->quit(caf::exit_reason::unhandled_exception);
  };
  return {
      [self, fatal](rhello_atom, const std::string& s, caf::actor client,
                    engine_hello h) -> serve::weights_result {
        auto& st = self->state;
        if (s != st.secret) return refused(403, "wrong secret");
        if (st.engine) return refused(400, "hello twice");
        try {
          st.comm = st.comm_ready.get();
          st.client = std::move(client);
          self->monitor(st.client);
          st.forwarder = self->home_system().spawn(event_forwarder, st.client);
          self->link_to(st.forwarder);
          st.hello = std::move(h);
          st.current = receive_weights(st);
          st.engine = make_engine(std::shared_ptr<const lm_weights>(st.current),
                                  tokenizer::load_hf(st.hello.tokenizer_file), st.hello.engine);
          return {200, 0, fmt::format("serving {} in process {}", st.hello.spec.name, ::getpid())};
        } catch (const std::exception& e) {
          fatal(e);
          return refused(500, e.what());
        }
      },
      [self](rsubmit_atom, const std::string& s, uint64_t cid,
             serve::completion_request req) -> serve::submit_result {
        auto& st = self->state;
        if (s != st.secret) return {0, 403, 0, "wrong secret"};
        if (!st.engine) return {0, 503, 0, "no engine yet"};
        const int n = req.n;
        std::lock_guard lk(*st.ids_mu);  // the sink may run before submit returns
        serve::submit_result r = st.engine->submit(std::move(req), forward_events(st, cid, n));
        if (r.status == 200) (*st.ids)[cid] = r.id;
        return r;
      },
      [self](rcancel_atom, const std::string& s, uint64_t cid) {
        auto& st = self->state;
        if (s != st.secret || !st.engine) return;
        std::optional<uint64_t> id;
        {
          std::lock_guard lk(*st.ids_mu);
          if (auto it = st.ids->find(cid); it != st.ids->end()) id = it->second;
        }
        if (id) st.engine->cancel(*id);
      },
      [self, fatal](rweights_atom, const std::string& s,
                    uint64_t version) -> serve::weights_result {
        auto& st = self->state;
        if (s != st.secret) return refused(403, "wrong secret");
        if (!st.engine) return refused(503, "no engine yet");
        std::shared_ptr<lm_weights> w;
        try {
          w = receive_weights(st);  // always: the client is sending them
        } catch (const std::exception& e) {
          fatal(e);
          return refused(500, e.what());
        }
        try {
          const uint64_t v = st.engine->update_weights(version, w);
          st.spare = std::exchange(st.current, std::move(w));
          return {200, v, ""};
        } catch (const std::exception& e) {
          return {400, st.engine->weights_version(), e.what()};
        }
      },
      [self](rmetrics_atom, const std::string& s) -> std::string {
        auto& st = self->state;
        return s == st.secret && st.engine ? st.engine->metrics_text() : std::string();
      },
  };
}

}  // namespace

int run_engine_host(const std::filesystem::path& rendezvous_dir) {
  const char* secret = std::getenv("ZF_ENGINE_SECRET");
  if (!secret || !*secret)
    fail("engine-host: ZF_ENGINE_SECRET is not set (an RLHF run starts this process itself)");
  caf::actor_system_config cfg;
  configure_engine_remote(cfg);
  caf::actor_system sys{cfg};
  auto store = comm::make_file_store(rendezvous_dir);
  std::promise<std::shared_ptr<comm::communicator>> ready;
  auto host =
      sys.spawn<caf::detached>(engine_host, std::string(secret), ready.get_future().share());
  caf::scoped_actor self{sys};
  self->monitor(host);
  try {
    auto port = sys.middleman().publish(host, 0, "127.0.0.1", true);  // loopback only
    if (!port) fail("engine-host: cannot listen on loopback: {}", sys.render(port.error()));
    const std::string p = std::to_string(*port);
    store->set("engine_port", std::vector<char>(p.begin(), p.end()));
    ready.set_value(comm::make_gloo(1, 2, store, "127.0.0.1", "weights"));
  } catch (...) {
    ready.set_exception(std::current_exception());
    self->send_exit(host, caf::exit_reason::user_shutdown);
    throw;
  }
  int code = 0;
  self->receive([&](const caf::down_msg& d) { code = d.reason ? 1 : 0; });
  return code;
}

}  // namespace zf::actors
