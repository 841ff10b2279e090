#pragma once
// The live console of issue 11: one web page over every run under a runs folder (the run list,
// curves, the actors' timeline, a server's figures), live through server-sent events.
//
//   zeroflow console [--runs DIR] [--host 127.0.0.1] [--port 8265] [--token FILE]
//   zeroflow serve --console    the same page under /console on the server's port
//
// Routes (under the site's prefix: "" standalone, "/console" inside serve):
//   GET /                   the page (console/index.html; its files and uPlot are built in)
//   GET /api/runs           the run list      GET /api/run/NAME   one run, with its config
//   GET /api/events/NAME?width=W   SSE: snapshot, append, spans, gone (monitor/console_views.hpp)
//   GET /metrics            the runs' last values, Prometheus text   GET /health
// Read-only: nothing here starts, stops or changes a run, or writes into a run folder. A run
// name from a URL is looked up among the folders found, never joined onto a path.
// Security: loopback by default; another address needs a token (--token FILE or
// ZEROFLOW_CONSOLE_TOKEN), and then every request without it gets 401. The token travels as
// `Authorization: Bearer T`, the cookie zf_console_token, or ?token=T (which sets the cookie, so
// the page and its EventSource carry it).
#include <memory>
#include <string>

namespace zf::actors {

struct console_options {
  std::string runs = "runs";  // the folder whose subfolders are runs
  std::string host = "127.0.0.1";
  int port = 8265;    // 0: an ephemeral port (see console_server::port())
  std::string token;  // empty: none (loopback only)
  int io_threads = 2;
  double refresh_s = 0.25;  // how often the runs folder is read
};

// The console's routes and the thread that reads the runs folder; shared by console_server and
// the gateway (serve --console). Defined in console_http.hpp.
class console_site;
// Starts reading `runs` now. prefix: "" or "/console".
std::shared_ptr<console_site> make_console_site(const console_options& o, std::string prefix);

class console_server {
 public:
  // Binds and serves. Throws zf::error "console: cannot listen on ..." or, for an address that
  // is not loopback with no token, "console: listening on HOST (not loopback) needs a token ...".
  explicit console_server(const console_options& o);
  ~console_server();
  console_server(const console_server&) = delete;
  console_server& operator=(const console_server&) = delete;

  int port() const;
  void stop();  // thread-safe, idempotent
  void wait();  // blocks until stop()

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The token of --token FILE (its first line, spaces trimmed) or, with no file, of the
// environment variable ZEROFLOW_CONSOLE_TOKEN; "" when neither is given. Throws zf::error for an
// unreadable or empty file and for a token shorter than 16 characters or with characters other
// than A-Z a-z 0-9 . _ ~ - (it travels in a header, a cookie and a URL, unescaped).
std::string console_token(const std::string& file);

}  // namespace zf::actors
