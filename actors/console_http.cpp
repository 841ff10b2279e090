// The console's routes; see console_server.hpp (what is served) and console_http.hpp.
#include "actors/console_http.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "actors/console_assets.hpp"
#include "runtime/api/url_parts.hpp"
#include "runtime/monitor/console_views.hpp"

namespace zf::actors {

namespace {

using openai::http_reply;

http_reply text_reply(int status, std::string body) {
  http_reply r;
  r.status = status;
  r.headers = {{"Content-Type", "text/plain; charset=utf-8"}, {"Cache-Control", "no-store"}};
  r.body = std::move(body) + "\n";
  return r;
}

http_reply json_answer(std::string body) {
  http_reply r = openai::json_reply(200, std::move(body));
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

const console_asset* asset(std::string_view name) {
  for (const auto& a : console_assets())
    if (a.name == name) return &a;
  return nullptr;
}

}  // namespace

console_site::console_site(const console_options& o, std::string prefix)
    : idx_(std::make_shared<monitor::run_index>(o.runs)),
      token_(o.token),
      prefix_(std::move(prefix)),
      refresh_s_(std::max(0.01, o.refresh_s)) {
  idx_->refresh();  // the first listing (and first reads) before any request
  reader_ = std::thread([this] {
    while (!stop_.load()) {
      // A backlog (a long file's first reading) is read on without pausing.
      if (idx_->refresh()) continue;
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::duration<double>(refresh_s_);
      while (!stop_.load() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
}

console_site::~console_site() {
  stop_ = true;
  if (reader_.joinable()) reader_.join();
}

bool console_site::owns(std::string_view target) const {
  const std::string_view path = target.substr(0, target.find('?'));
  if (prefix_.empty()) return true;
  return path == prefix_ || (path.starts_with(prefix_) && path[prefix_.size()] == '/');
}

console_site::answer console_site::handle(const console_request& r) const {
  const auto qm = r.target.find('?');
  std::string_view path = r.target.substr(0, qm);
  const std::string_view query = qm == std::string_view::npos ? "" : r.target.substr(qm + 1);
  path.remove_prefix(std::min(prefix_.size(), path.size()));
  // The token first, for every path: a 401 says nothing about what exists.
  std::optional<std::string> set_cookie;
  if (has_token()) {
    const auto cookie =
        r.cookie ? openai::cookie_value(*r.cookie, "zf_console_token") : std::nullopt;
    const auto in_query = openai::query_value(query, "token");
    bool ok = r.authorization && openai::bearer_authorized(*r.authorization, {token_});
    ok = ok || (cookie && openai::secret_equal(*cookie, token_));
    if (!ok && in_query && openai::secret_equal(*in_query, token_)) {
      ok = true;
      set_cookie = fmt::format("zf_console_token={}; Path=/; HttpOnly; SameSite=Strict", token_);
    }
    if (!ok) {
      answer a{"console_unauthorized",
               text_reply(401,
                          "console: this console needs its token "
                          "(Authorization: Bearer, or ?token=)"),
               {}};
      a.reply.headers.emplace_back("WWW-Authenticate", "Bearer");
      return a;
    }
  }
  if (r.method != "GET" && r.method != "HEAD") {
    answer a{"console_other", text_reply(405, "console: read-only, GET only"), {}};
    a.reply.headers.emplace_back("Allow", "GET, HEAD");
    return a;
  }
  answer a = route(r, path, query);
  if (a.stream && r.method == "HEAD") {  // the stream's head alone, as a complete reply
    a.stream = nullptr;
    a.reply.chunked = false;
  }
  if (set_cookie) a.reply.headers.emplace_back("Set-Cookie", *set_cookie);
  return a;
}

console_site::answer console_site::route(const console_request& r, std::string_view path,
                                         std::string_view query) const {
  const double now = monitor::unix_now();
  if (path.empty() && !prefix_.empty()) {  // "/console": the page's relative URLs need the slash
    http_reply red = text_reply(308, "see " + prefix_ + "/");
    red.headers.emplace_back("Location", prefix_ + "/");
    return {"console_page", std::move(red), {}};
  }
  if (path == "/" || path == "/index.html") path = "/index.html";
  if (!path.starts_with("/api/") && path.find('/', 1) == std::string_view::npos) {
    if (const console_asset* f = asset(path.substr(1))) {
      http_reply rep;
      rep.headers = {{"Content-Type", std::string(f->content_type)},
                     {"Cache-Control", "no-cache"},
                     {"X-Content-Type-Options", "nosniff"}};
      if (f->name == "index.html") {
        rep.headers.emplace_back("Content-Security-Policy",
                                 "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 "img-src 'self' data:; frame-ancestors 'none'");
      }
      rep.body = f->bytes;
      return {"console_page", std::move(rep), {}};
    }
  }
  if (path == "/health") return {"console_health", text_reply(200, "ok"), {}};
  if (path == "/metrics") {
    http_reply rep = text_reply(200, monitor::prometheus_text(*idx_));
    rep.body.pop_back();  // text_reply's newline: the text ends with its own
    rep.headers[0].second = "text/plain; version=0.0.4; charset=utf-8";
    return {"console_metrics", std::move(rep), {}};
  }
  if (path == "/api/runs") return {"console_api", json_answer(monitor::runs_json(*idx_, now)), {}};
  auto run_name = [&](std::string_view route) -> std::optional<std::string> {
    if (!path.starts_with(route)) return std::nullopt;
    return openai::percent_decode(path.substr(route.size()));
  };
  if (auto name = run_name("/api/run/")) {
    if (auto body = monitor::run_json(*idx_, *name, now))
      return {"console_api", json_answer(std::move(*body)), {}};
  } else if (auto ev = run_name("/api/events/")) {
    int width = 800;
    if (auto w = openai::query_value(query, "width"))
      std::from_chars(w->data(), w->data() + w->size(), width);
    std::optional<std::string> last_id;
    if (r.last_event_id) last_id = std::string(*r.last_event_id);
    auto st = std::make_shared<monitor::event_stream>(idx_, *ev, width, last_id);
    if (st->found()) {
      http_reply head;
      head.headers = {{"Content-Type", "text/event-stream"},
                      {"Cache-Control", "no-cache"},
                      {"X-Accel-Buffering", "no"}};
      head.chunked = true;
      return {"console_events", std::move(head), [st]() -> std::optional<std::string> {
                std::string bytes = st->poll(monitor::unix_now());
                if (bytes.empty() && st->done()) return std::nullopt;
                return bytes;
              }};
    }
  }
  return {"other", text_reply(404, "console: no such page or run"), {}};
}

std::shared_ptr<console_site> make_console_site(const console_options& o, std::string prefix) {
  return std::make_shared<console_site>(o, std::move(prefix));
}

}  // namespace zf::actors
