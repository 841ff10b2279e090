// serve_tiny: the serving graph (engine -> gateway) plus a stage of our own that, once the
// server listens, asks it one question over HTTP, prints the answer and stops the run.
//   build/examples/serve_tiny [--hf DIR]     (default: a freshly initialised tiny GPT-2)
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <nlohmann/json.hpp>

#include "pipelines/graph_run.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_serve.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"

namespace {

// One HTTP/1.1 POST on a plain socket; the whole response (Connection: close).
std::string post(int port, const std::string& path, const std::string& body) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw zf::error("connect");
  const std::string req =
      "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, std::size_t(n));
  ::close(fd);
  return out;
}

struct ask : zf::stage {
  zf::in_port<zf::endpoint> server = input<zf::endpoint>("server");
  std::atomic<bool>* stop;
  explicit ask(std::atomic<bool>* s) : stop(s) {}
  void start(zf::stage_context& ctx) override {
    ctx.on(server, [this](const std::shared_ptr<const zf::endpoint>& e) {
      const nlohmann::json q = {{"prompt", "Call me"}, {"max_tokens", 8}, {"temperature", 0}};
      const std::string r = post(e->port, "/v1/completions", q.dump());
      const auto body = nlohmann::json::parse(r.substr(r.find("\r\n\r\n") + 4));
      std::cout << "serve_tiny: http://" << e->host << ":" << e->port << " answered \"Call me"
                << body["choices"][0]["text"].get<std::string>() << "\"\n";
      *stop = true;
    });
  }
};

}  // namespace

int main(int argc, char** argv) try {
  std::shared_ptr<const zf::lm_weights> w;
  zf::tokenizer tok = zf::tokenizer::load_gpt2(zf::data_dir(zf::run_config{}) / "gpt2");
  if (argc > 2 && std::string(argv[1]) == "--hf") {
    w = std::make_shared<const zf::lm_weights>(zf::load_hf_weights(argv[2]));
    tok = zf::tokenizer::load_hf(argv[2]);
  } else {
    zf::model_config m;  // 2 layers, width 64: random weights, a real engine
    m.n_layer = 2, m.n_embd = 64, m.n_head = 2, m.n_positions = 128;
    zf::transformer model(m, true, false);
    model.init_weights(1);
    auto spec = zf::spec_of(m);
    spec.name = "tiny";
    w = std::make_shared<const zf::lm_weights>(zf::copy_lm_weights(spec, model.params().data()));
  }
  std::atomic<bool> stop{false};
  zf::graph g;
  auto& engine = g.add<zf::stages::engine_stage>("engine", w, tok, zf::engine_config{});
  auto& http = g.add<zf::stages::gateway_stage>("gateway", zf::actors::gateway_options{.port = 0});
  auto& q = g.add<ask>("ask", &stop);
  g.connect(engine.backend, http.backend);
  g.connect(http.listening, q.server);
  zf::run_graph(g, {.stop = &stop});
  return 0;
} catch (const std::exception& e) {
  std::cerr << "serve_tiny: " << e.what() << "\n";
  return 1;
}
