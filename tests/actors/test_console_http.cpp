// The console over real sockets (actors/console_server): the page and its API, the token, names
// that would leave the runs folder, and the live stream: a snapshot, appended lines within a
// second, a reconnect that resumes from Last-Event-ID, and the end when the run's folder goes.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "actors/console_server.hpp"
#include "actors/gateway.hpp"
#include "fake_backend.hpp"
#include "http_client.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace zf::testing;

namespace {

void append(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::app | std::ios::binary) << text;
}

std::string steps(int from, int to) {
  std::string s;
  for (int i = from; i <= to; ++i)
    s += fmt::format("{{\"step\": {}, \"loss\": {}}}\n", i, 5 - i * 0.03);
  return s;
}

// A folder with one run `r` of 20 steps.
struct runs_fixture {
  temp_dir d{"console_http"};
  runs_fixture() {
    fs::create_directories(d / "r");
    append(d / "r" / "metrics.jsonl", steps(1, 20));
    std::ofstream(d / "r" / "run.json")
        << json{{"kind", "train"},     {"state", "running"}, {"pid", ::getpid()},    {"host", ""},
                {"start_unix", 1000.}, {"total_steps", 40},  {"config", "[train]\n"}}
               .dump();
  }
  zf::actors::console_options opts(std::string token = {}) const {
    zf::actors::console_options o;
    o.runs = d.path.string();
    o.port = 0;
    o.token = std::move(token);
    o.refresh_s = 0.05;
    return o;
  }
};

// A raw socket reading a stream: send() a request, then read until `want` is in what arrived.
struct raw_stream {
  net::io_context ioc;
  tcp::socket socket{ioc};
  std::string got;
  explicit raw_stream(int port) {
    socket.connect({net::ip::make_address("127.0.0.1"), uint16_t(port)});
  }
  void send(const std::string& target, const std::string& extra_headers = {}) {
    const std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + extra_headers + "\r\n";
    net::write(socket, net::buffer(req));
  }
  bool read_until(const std::string& want, double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    char buf[65536];
    while (got.find(want) == std::string::npos) {
      if (std::chrono::steady_clock::now() > until) return false;
      boost::system::error_code ec;
      if (socket.available(ec) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      const std::size_t n = socket.read_some(net::buffer(buf), ec);
      if (ec) return got.find(want) != std::string::npos;
      got.append(buf, n);
    }
    return true;
  }
};

response get_with(int port, const std::string& target, http::field f, const std::string& v) {
  client c(port);
  auto req = client::make(http::verb::get, target);
  req.set(f, v);
  http::write(c.socket, req);
  return c.read();
}

}  // namespace

TEST_CASE("console http: page, run list, run detail, metrics, names outside the folder are 404") {
  runs_fixture f;
  zf::actors::console_server s(f.opts());
  client c(s.port());
  auto page = c.get("/");
  CHECK(page.result_int() == 200);
  CHECK(page.body().find("<html") != std::string::npos);
  CHECK(page["Content-Security-Policy"].find("default-src 'self'") != std::string::npos);
  CHECK(c.get("/uPlot.iife.min.js").result_int() == 200);
  CHECK(c.get("/console.js")[http::field::content_type].starts_with("text/javascript"));
  const json runs = json::parse(c.get("/api/runs").body());
  REQUIRE(runs["runs"].size() == 1);
  CHECK(runs["runs"][0]["name"] == "r");
  CHECK(runs["runs"][0]["rows"] == 20);
  CHECK(runs["runs"][0]["last_step"] == 20);
  const json one = json::parse(c.get("/api/run/r").body());
  CHECK(one["config"] == "[train]\n");
  CHECK(one["keys"] == json::array({"loss"}));
  const std::string prom = c.get("/metrics").body();
  CHECK(prom.find("zeroflow_run_step{run=\"r\"} 20\n") != std::string::npos);
  for (const char* bad :
       {"/api/run/..%2Fr", "/api/run/../r", "/api/run/%2e%2e", "/api/run/r/x",
        "/api/events/..%2F..%2Fetc", "/../etc/passwd", "/api/run/", "/nope", "/api/run/%zz"})
    CHECK_MESSAGE(c.get(bad).result_int() == 404, bad);
  CHECK(c.request(http::verb::post, "/api/runs", "{}").result_int() == 405);
  {  // HEAD of a stream: its head, and the connection goes on to the next request
    http::write(c.socket, client::make(http::verb::head, "/api/events/r"));
    http::response_parser<http::empty_body> p;
    p.skip(true);
    http::read_header(c.socket, c.buffer, p);
    CHECK(p.get().result_int() == 200);
    CHECK(p.get()[http::field::content_type] == "text/event-stream");
    CHECK(c.get("/api/runs").result_int() == 200);
  }
}

TEST_CASE("console http: with a token, every request without it is 401") {
  runs_fixture f;
  const std::string token = "0123456789abcdef-token";
  zf::actors::console_server s(f.opts(token));
  CHECK(client(s.port()).get("/").result_int() == 401);
  CHECK(client(s.port()).get("/api/runs").result_int() == 401);
  CHECK(client(s.port()).get("/nope").result_int() == 401);  // says nothing about what exists
  CHECK(get_with(s.port(), "/api/runs", http::field::authorization, "Bearer wrong").result_int() ==
        401);
  CHECK(
      get_with(s.port(), "/api/runs", http::field::cookie, "zf_console_token=wrong").result_int() ==
      401);
  CHECK(
      get_with(s.port(), "/api/runs", http::field::authorization, "Bearer " + token).result_int() ==
      200);
  CHECK(get_with(s.port(), "/api/runs", http::field::cookie, "a=b; zf_console_token=" + token)
            .result_int() == 200);
  auto q = client(s.port()).get("/?token=" + token);
  CHECK(q.result_int() == 200);
  CHECK(q[http::field::set_cookie].find("zf_console_token=" + token) != std::string::npos);
  CHECK(q[http::field::set_cookie].find("HttpOnly") != std::string::npos);
  CHECK(client(s.port()).get("/?token=wrong").result_int() == 401);
}

TEST_CASE(
    "console http: the stream sends a snapshot, new lines, resumes, and ends when the run goes") {
  runs_fixture f;
  zf::actors::console_server s(f.opts());
  std::string cursor;
  {
    raw_stream st(s.port());
    st.send("/api/events/r?width=100");
    REQUIRE(st.read_until("event: snapshot", 5));
    CHECK(st.got.find("text/event-stream") != std::string::npos);
    REQUIRE(st.read_until("\"cursor\":\"0.20\"", 5));
    const auto t0 = std::chrono::steady_clock::now();
    append(f.d / "r" / "metrics.jsonl", steps(21, 25));
    REQUIRE(st.read_until("\"cursor\":\"0.25\"", 5));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(secs < 2.0);  // the bound; typically 0.3 s (refresh 50 ms + stream poll 250 ms)
    cursor = "0.25";
  }
  append(f.d / "r" / "metrics.jsonl", steps(26, 28));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  {
    raw_stream st(s.port());
    st.send("/api/events/r?width=100", "Last-Event-ID: " + cursor + "\r\n");
    REQUIRE(st.read_until("\"cursor\":\"0.28\"", 5));
    CHECK(st.got.find("event: snapshot") == std::string::npos);  // only what was missed
    CHECK(st.got.find("\"x\":[26,27,28]") != std::string::npos);
    fs::remove_all(f.d / "r");
    REQUIRE(st.read_until("event: gone", 5));
    REQUIRE(st.read_until("0\r\n\r\n", 5));  // the chunked body's end
  }
  CHECK(client(s.port()).get("/api/events/r").result_int() == 404);
}

TEST_CASE("console: another address needs a token, and a token must be a real one") {
  runs_fixture f;
  auto o = f.opts();
  o.host = "0.0.0.0";
  const std::string msg = error_of([&] { zf::actors::console_server s(o); });
  CHECK(msg.find("not loopback") != std::string::npos);
  CHECK(msg.find("--token") != std::string::npos);
  temp_dir d("console_token");
  std::ofstream(d / "short") << "abc\n";
  std::ofstream(d / "bad") << "0123456789abcdef;x\n";
  std::ofstream(d / "good") << "  0123456789abcdef-good \n";
  CHECK(error_of([&] { zf::actors::console_token((d / "short").string()); }).find("16") !=
        std::string::npos);
  CHECK(error_of([&] { zf::actors::console_token((d / "bad").string()); }).find("A-Z") !=
        std::string::npos);
  CHECK(error_of([&] {
          zf::actors::console_token((d / "missing").string());
        }).find("cannot read") != std::string::npos);
  CHECK(zf::actors::console_token((d / "good").string()) == "0123456789abcdef-good");
}

TEST_CASE("console under /console on the gateway's port, beside the OpenAI routes") {
  runs_fixture f;
  zf::testing::fake_backend backend{256};
  zf::actors::gateway_options o;
  o.port = 0;
  o.api_keys = {"sk-test"};  // the OpenAI routes' keys do not open or close the console
  o.console = zf::actors::make_console_site(f.opts(), "/console");
  zf::actors::gateway gw(backend, o);
  client c(gw.port());
  auto red = c.get("/console");
  CHECK(red.result_int() == 308);
  CHECK(red[http::field::location] == "/console/");
  CHECK(c.get("/console/").body().find("<html") != std::string::npos);
  CHECK(c.get("/console/uPlot.min.css").result_int() == 200);
  CHECK(json::parse(c.get("/console/api/runs").body())["runs"][0]["name"] == "r");
  CHECK(c.get("/console/api/run/..%2Fr").result_int() == 404);
  CHECK(c.get("/v1/models").result_int() == 401);  // still the gateway's, key needed
  CHECK(c.get("/consolex").result_int() == 404);   // not under the prefix
  raw_stream st(gw.port());
  st.send("/console/api/events/r?width=50");
  REQUIRE(st.read_until("\"cursor\":\"0.20\"", 5));
  append(f.d / "r" / "metrics.jsonl", steps(21, 22));
  REQUIRE(st.read_until("\"cursor\":\"0.22\"", 5));
  // Another address with a console and no console token: refused at start.
  auto o2 = o;
  o2.host = "0.0.0.0";
  CHECK(error_of([&] { zf::actors::gateway g(backend, o2); }).find("needs a token") !=
        std::string::npos);
}
