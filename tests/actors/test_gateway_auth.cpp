// server.api_keys: with keys configured every route but /health needs `Authorization: Bearer
// <key>`; a missing, malformed or wrong key gets 401 with an OpenAI error body and nothing runs.
#include <doctest/doctest.h>

#include <optional>

#include "actors/gateway.hpp"
#include "fake_backend.hpp"
#include "http_client.hpp"

using namespace zf::testing;

TEST_CASE("gateway api keys: bearer token required on every route but /health") {
  fake_backend backend{256};
  zf::actors::gateway_options o;
  o.port = 0;
  o.api_keys = {"sk-one", "sk-two"};
  zf::actors::gateway gw(backend, o);
  client c(gw.port());
  const json body = {{"prompt", "the cat"}, {"max_tokens", 2}};
  auto with = [&](const std::string& auth, http::verb verb, const std::string& target) {
    auto req = client::make(verb, target, verb == http::verb::post ? body.dump() : "");
    if (!auth.empty()) req.set(http::field::authorization, auth);
    http::write(c.socket, req);
    return c.read();
  };
  const std::size_t before = backend.submitted().size();
  for (const std::string& bad : {std::string(), std::string("sk-one"), std::string("Bearer sk-on"),
                                 std::string("Bearer sk-one2"), std::string("Basic sk-one")}) {
    CAPTURE(bad);
    auto r = with(bad, http::verb::post, "/v1/completions");
    CHECK(r.result_int() == 401);
    CHECK(json::parse(r.body())["error"]["code"] == "invalid_api_key");
    CHECK(with(bad, http::verb::get, "/v1/models").result_int() == 401);
    CHECK(with(bad, http::verb::get, "/metrics").result_int() == 200);  // open by default
  }
  CHECK(backend.submitted().size() == before);  // nothing reached the engine
  CHECK(with("", http::verb::get, "/health").result_int() == 200);
  CHECK(with("Bearer sk-one", http::verb::post, "/v1/completions").result_int() == 200);
  CHECK(with("Bearer sk-two", http::verb::get, "/v1/models").result_int() == 200);
  CHECK(backend.submitted().size() == before + 1);
}
