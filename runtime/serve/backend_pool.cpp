#include "runtime/serve/backend_pool.hpp"

#include "runtime/core/error.hpp"

namespace zf::serve {

backend_pool::backend_pool(std::vector<std::unique_ptr<completion_backend>> engines)
    : e_(std::move(engines)) {
  if (e_.empty()) fail("backend_pool: no engines");
}

submit_result backend_pool::submit(completion_request req, event_sink sink) {
  const uint64_t id = next_.fetch_add(1) + 1;
  const std::size_t k = (id - 1) % e_.size();
  const int n = std::max(1, req.n);
  {
    std::lock_guard lk(mu_);
    routes_[id] = {k, 0, n};
  }
  // Events carry the pool's id; the last choice's final event forgets the route.
  auto relabel = [this, id, sink = std::move(sink)](const completion_event& e) {
    completion_event out = e;
    out.request_id = id;
    if (e.finish != finish_reason::none) {
      std::lock_guard lk(mu_);
      if (auto it = routes_.find(id); it != routes_.end() && --it->second.open == 0)
        routes_.erase(it);
    }
    sink(out);
  };
  submit_result r = e_[k]->submit(std::move(req), std::move(relabel));
  std::lock_guard lk(mu_);
  if (r.status != 200) {
    routes_.erase(id);
    return r;
  }
  if (auto it = routes_.find(id); it != routes_.end()) it->second.id = r.id;
  r.id = id;
  return r;
}

void backend_pool::cancel(uint64_t id) {
  route r{};
  {
    std::lock_guard lk(mu_);
    auto it = routes_.find(id);
    if (it == routes_.end()) return;
    r = it->second;
  }
  e_[r.engine]->cancel(r.id);
}

std::string backend_pool::metrics_text() const {
  std::string text;
  for (const auto& e : e_) text += e->metrics_text();
  return text;
}

bool backend_pool::observe_steps(step_observer f) {
  bool any = false;
  for (const auto& e : e_) any |= e->observe_steps(f);
  return any;
}

std::optional<engine_snapshot> backend_pool::snapshot() const {
  std::vector<engine_snapshot> parts;
  for (const auto& e : e_)
    if (auto s = e->snapshot()) parts.push_back(std::move(*s));
  if (parts.empty()) return std::nullopt;
  return merge(parts);
}

std::string backend_pool::failure() const {
  for (const auto& e : e_)
    if (auto f = e->failure(); !f.empty()) return f;
  return "";
}

uint64_t backend_pool::weights_version() const {
  uint64_t v = e_[0]->weights_version();
  for (const auto& e : e_) v = std::min(v, e->weights_version());
  return v;
}

void backend_pool::update_weights_async(std::shared_ptr<const lm_weights> weights,
                                        std::optional<uint64_t> version, weights_done done) {
  struct join {
    std::mutex mu;
    std::size_t left;
    weights_result first_refusal{200, 0, ""};
    weights_done done;
  };
  auto j = std::make_shared<join>();
  j->left = e_.size();
  j->done = std::move(done);
  for (const auto& e : e_)
    e->update_weights_async(weights, version, [j](const weights_result& r) {
      weights_result out;
      {
        std::lock_guard lk(j->mu);
        if (r.status != 200 && j->first_refusal.status == 200) j->first_refusal = r;
        if (r.status == 200 && j->first_refusal.status == 200) j->first_refusal.version = r.version;
        if (--j->left > 0) return;
        out = j->first_refusal;
      }
      j->done(out);
    });
}

}  // namespace zf::serve
