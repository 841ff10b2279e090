// Next-token sampling: greedy paths, seeding, top-k / top-p support and the distribution itself;
// the log-probability helpers (log_sum_exp, top_k_ids).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "runtime/serve/sampling.hpp"

namespace {

std::vector<int> draw(const zf::sampling_params& p, const std::vector<float>& logits, int n) {
  zf::sampler s(p);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits.data(), int(logits.size())));
  return out;
}

// 16 logits with a unique maximum at index 11 and distinct values elsewhere.
const std::vector<float> k_logits = {0.3f, -1.0f, 1.2f, 0.9f, -0.5f, 0.1f, 2.0f,  -2.0f,
                                     0.0f, 1.7f,  0.4f, 2.5f, -0.2f, 0.8f, -1.5f, 0.6f};
constexpr int k_argmax = 11;

}  // namespace

TEST_CASE("sampling: argmax") {
  CHECK(zf::argmax(k_logits.data(), int(k_logits.size())) == k_argmax);
  const float ties[] = {1.0f, 3.0f, 3.0f, 2.0f};
  CHECK(zf::argmax(ties, 4) == 1);  // first of equal maxima
  const float one[] = {-7.0f};
  CHECK(zf::argmax(one, 1) == 0);
}

TEST_CASE("sampling: temperature 0 and top_k 1 are greedy") {
  zf::sampling_params p;
  p.temperature = 0.0f;
  p.seed = 5;
  for (int id : draw(p, k_logits, 50)) CHECK(id == k_argmax);

  zf::sampling_params k1;
  k1.temperature = 1.5f;
  k1.top_k = 1;
  k1.seed = 6;
  for (int id : draw(k1, k_logits, 50)) CHECK(id == k_argmax);
}

TEST_CASE("sampling: same seed gives the same sequence, another seed another one") {
  zf::sampling_params p;
  p.temperature = 1.0f;
  p.seed = 1234;
  auto a = draw(p, k_logits, 200);
  auto b = draw(p, k_logits, 200);
  CHECK(a == b);
  p.seed = 1235;
  auto c = draw(p, k_logits, 200);
  CHECK(a != c);
  // the sequence is not constant (it really samples)
  CHECK(std::set<int>(a.begin(), a.end()).size() > 3);

  // the same holds with top-k and top-p on
  zf::sampling_params q;
  q.top_k = 5;
  q.top_p = 0.9f;
  q.seed = 77;
  CHECK(draw(q, k_logits, 100) == draw(q, k_logits, 100));
}

TEST_CASE("sampling: top_k 3 only picks among the 3 largest logits") {
  zf::sampling_params p;
  p.temperature = 2.0f;  // flatten, so the 3 are all hit
  p.top_k = 3;
  p.seed = 9;
  const std::set<int> top3 = {11, 6, 9};  // 2.5, 2.0, 1.7
  std::set<int> seen;
  for (int id : draw(p, k_logits, 5000)) {
    CHECK(top3.count(id) == 1);
    seen.insert(id);
  }
  CHECK(seen == top3);
}

TEST_CASE("sampling: small top_p picks only the argmax") {
  zf::sampling_params p;
  p.temperature = 1.0f;
  p.top_p = 0.05f;  // the argmax alone carries more than that
  p.seed = 3;
  for (int id : draw(p, k_logits, 500)) CHECK(id == k_argmax);

  // top_p that needs exactly the two largest: probs 0.5, 0.3, 0.15, 0.05
  const std::vector<float> l = {std::log(0.05f), std::log(0.5f), std::log(0.15f), std::log(0.3f)};
  zf::sampling_params q;
  q.top_p = 0.7f;
  q.seed = 4;
  std::set<int> seen;
  for (int id : draw(q, l, 2000)) seen.insert(id);
  CHECK(seen == std::set<int>{1, 3});
}

TEST_CASE("sampling: temperature 1 frequencies match the softmax") {
  const std::vector<float> l = {0.0f, 1.0f, -0.5f, 0.5f};
  std::array<double, 4> prob{};
  double z = 0;
  for (int i = 0; i < 4; ++i) z += std::exp(l[i]);
  for (int i = 0; i < 4; ++i) prob[i] = std::exp(l[i]) / z;

  zf::sampling_params p;
  p.temperature = 1.0f;
  p.seed = 2024;
  const int n = 20000;
  std::array<int, 4> count{};
  for (int id : draw(p, l, n)) {
    REQUIRE(id >= 0);
    REQUIRE(id < 4);
    ++count[id];
  }
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(double(count[i]) / n - prob[i]) < 0.015);  // ~4 sigma at p = 0.45
  }

  // temperature 2 halves the logits: frequencies follow softmax(l / 2)
  zf::sampling_params hot;
  hot.temperature = 2.0f;
  hot.seed = 2025;
  std::array<int, 4> hc{};
  for (int id : draw(hot, l, n)) ++hc[id];
  double z2 = 0;
  for (int i = 0; i < 4; ++i) z2 += std::exp(l[i] / 2);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(double(hc[i]) / n - std::exp(l[i] / 2) / z2) < 0.015);
  }
}

TEST_CASE("sampling: log_sum_exp is stable and gives log_softmax summing to 1") {
  // Against a direct double evaluation, and shifted by +-1000 (exp alone would overflow or
  // underflow to 0 in float and double).
  double direct = 0;
  for (float x : k_logits) direct += std::exp(double(x));
  const int n = int(k_logits.size());
  CHECK(zf::log_sum_exp(k_logits.data(), n) == doctest::Approx(std::log(direct)).epsilon(1e-6));
  for (float shift : {1000.0f, -1000.0f}) {
    std::vector<float> s = k_logits;
    for (float& x : s) x += shift;
    const double lse = zf::log_sum_exp(s.data(), n);
    REQUIRE(std::isfinite(lse));
    CHECK(lse - shift == doctest::Approx(std::log(direct)).epsilon(1e-6));
    double total = 0;
    for (float x : s) total += std::exp(x - lse);
    CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("sampling: top_k_ids equals a full sort, ties by lower id, without reallocating") {
  std::mt19937 g(3);
  std::vector<float> x(5000);
  // Few distinct values: many ties, so the tie order is exercised.
  for (float& v : x) v = float(g() % 40) * 0.25f;
  std::vector<int> ref(x.size());
  for (int i = 0; i < int(x.size()); ++i) ref[i] = i;
  std::stable_sort(ref.begin(), ref.end(), [&](int a, int b) { return x[a] > x[b]; });
  std::vector<int> out;
  out.reserve(20);
  const int* data = out.data();
  for (int k : {0, 1, 2, 7, 20}) {
    CAPTURE(k);
    zf::top_k_ids(x.data(), int(x.size()), k, out);
    CHECK(out == std::vector<int>(ref.begin(), ref.begin() + k));
    CHECK(out.data() == data);  // the caller's capacity is reused
  }
  CHECK(std::vector<int>{zf::argmax(x.data(), int(x.size()))} ==
        std::vector<int>(ref.begin(), ref.begin() + 1));
  zf::top_k_ids(k_logits.data(), 3, 10, out);  // k beyond n: all n
  CHECK(out == std::vector<int>{2, 0, 1});
}

namespace {

// Six logits, and what one penalty does to them below (all values exact in binary).
const std::vector<float> k_row = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};

// The row after logit_penalties(p, prompt) accepted generated, in order.
std::vector<float> penalized(const zf::sampling_params& p, const std::vector<int>& prompt,
                             const std::vector<int>& generated) {
  zf::logit_penalties pen(p, prompt, 8);
  for (int t : generated) pen.accept(t);
  std::vector<float> row = k_row;
  pen.apply(row.data(), int(row.size()));
  return row;
}

}  // namespace

TEST_CASE("sampling: presence and frequency penalties count generated tokens only") {
  // Prompt {1, 2, 2} does not count; generated: token 3 three times, 5 once, 0 never.
  const std::vector<int> prompt = {1, 2, 2}, gen = {3, 5, 3, 3};
  zf::sampling_params pres;
  pres.presence_penalty = 0.5f;  // once per generated id, however often
  CHECK(penalized(pres, prompt, gen) == std::vector<float>{2.0f, -1.0f, 0.5f, 2.5f, -2.0f, 0.5f});
  zf::sampling_params freq;
  freq.frequency_penalty = 0.25f;  // count 0, 3, 1
  CHECK(penalized(freq, prompt, gen) == std::vector<float>{2.0f, -1.0f, 0.5f, 2.25f, -2.0f, 0.75f});
  zf::sampling_params both;
  both.presence_penalty = -1.0f;  // negative: encourages repetition
  both.frequency_penalty = 2.0f;
  CHECK(penalized(both, prompt, gen) == std::vector<float>{2.0f, -1.0f, 0.5f, -2.0f, -2.0f, 0.0f});

  zf::logit_penalties pen(both, prompt, 8);
  for (int t : gen) pen.accept(t);
  CHECK(pen.count(0) == 0);
  CHECK(pen.count(1) == 0);  // prompt ids are not counted
  CHECK(pen.count(3) == 3);
  CHECK(pen.count(5) == 1);
}

TEST_CASE("sampling: repetition penalty divides positive and multiplies negative seen logits") {
  zf::sampling_params p;
  p.repetition_penalty = 2.0f;
  // Seen: prompt {1, 2} (-1 and 0.5) and generated {3} (3.0, three times: still once);
  // 0, 4 and 5 unseen.
  CHECK(penalized(p, {1, 2, 2}, {3, 3, 3}) ==
        std::vector<float>{2.0f, -2.0f, 0.25f, 1.5f, -2.0f, 1.0f});
  // A token in both the prompt and the output is penalized once.
  CHECK(penalized(p, {3}, {3}) == std::vector<float>{2.0f, -1.0f, 0.5f, 1.5f, -2.0f, 1.0f});
  // p < 1 rewards repetition: 3.0 / 0.5 = 6, -1 * 0.5 = -0.5.
  p.repetition_penalty = 0.5f;
  CHECK(penalized(p, {1}, {3}) == std::vector<float>{2.0f, -0.5f, 0.5f, 6.0f, -2.0f, 1.0f});
}

TEST_CASE("sampling: logit_bias adds, then repetition, then frequency and presence (vLLM order)") {
  zf::sampling_params b;
  b.logit_bias = {{4, 1.5f}, {0, -0.5f}};
  CHECK(penalized(b, {}, {}) == std::vector<float>{1.5f, -1.0f, 0.5f, 3.0f, -0.5f, 1.0f});
  // Bias alone greedy-picks a token it raises past the argmax (3).
  zf::sampling_params g = b;
  g.temperature = 0;
  g.logit_bias = {{4, 100.0f}};
  auto row = penalized(g, {}, {});
  CHECK(zf::sampler(g).sample(row.data(), int(row.size())) == 4);

  // All of them: bias on 0 and 4; repetition 2 on prompt {1, 2} and generated {3 x3, 5};
  // then frequency 0.25 and presence 0.5 on 3 (1.5 - 0.75 - 0.5) and 5 (0.5 - 0.25 - 0.5).
  zf::sampling_params all = b;
  all.repetition_penalty = 2.0f;
  all.frequency_penalty = 0.25f;
  all.presence_penalty = 0.5f;
  CHECK(penalized(all, {1, 2, 2}, {3, 5, 3, 3}) ==
        std::vector<float>{1.5f, -2.0f, 0.25f, 0.25f, -0.5f, -0.25f});
  // Bias before repetition: token 1 biased to a positive logit is then divided.
  zf::sampling_params order;
  order.logit_bias = {{1, 3.0f}};
  order.repetition_penalty = 4.0f;
  CHECK(penalized(order, {1}, {})[1] == 0.5f);  // (-1 + 3) / 4, not -1 * 4 + 3
}

TEST_CASE("sampling: no penalty is a no-op that keeps no state, and sampling is unchanged") {
  zf::sampling_params p;  // defaults, and explicit identity values
  p.presence_penalty = 0;
  p.frequency_penalty = 0;
  p.repetition_penalty = 1;
  CHECK_FALSE(p.penalized());
  zf::logit_penalties pen(p, std::vector<int>{1, 2, 3}, 1000);
  CHECK_FALSE(pen.active());
  pen.accept(3);
  CHECK(pen.count(3) == 0);  // nothing recorded
  std::vector<float> row = k_row;
  pen.apply(row.data(), int(row.size()));
  CHECK(row == k_row);
  CHECK_FALSE(zf::logit_penalties().active());

  // Only logit_bias: active, but it counts nothing.
  zf::sampling_params b;
  b.logit_bias = {{2, 1.0f}};
  zf::logit_penalties pb(b, std::vector<int>{1}, 1000);
  CHECK(pb.active());
  pb.accept(2);
  CHECK(pb.count(2) == 0);

  // The sampler's draws with penalty fields present but off equal the plain ones: same seed,
  // same sequence (the sampler does not read the penalty fields).
  zf::sampling_params s;
  s.seed = 99;
  s.top_k = 8;
  zf::sampling_params s_off = s;
  s_off.repetition_penalty = 1;
  CHECK(draw(s, k_logits, 200) == draw(s_off, k_logits, 200));
}

TEST_CASE(
    "sampling: penalties against a dense reference on random rows, ids out of range skipped") {
  std::mt19937 g(17);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  const int V = 64;
  zf::sampling_params p;
  p.presence_penalty = 0.7f;
  p.frequency_penalty = -0.3f;
  p.repetition_penalty = 1.3f;
  p.logit_bias = {{5, 2.0f}, {9, -3.0f}, {V + 3, 50.0f}, {-1, 50.0f}};
  std::vector<int> prompt(20), gen(40);
  for (int& t : prompt) t = int(g() % V);
  for (int& t : gen) t = int(g() % 24);  // repeats
  zf::logit_penalties pen(p, prompt, int(gen.size()));
  std::vector<int> count(V, 0);
  std::vector<bool> seen(V, false);
  for (int t : prompt) seen[t] = true;
  for (int step = 0; step < int(gen.size()); ++step) {
    CAPTURE(step);
    std::vector<float> row(V), want(V);
    for (float& x : row) x = u(g);
    for (int v = 0; v < V; ++v) {
      float x = row[v] + (v == 5 ? 2.0f : v == 9 ? -3.0f : 0.0f);
      if (seen[v]) x = x > 0 ? x / 1.3f : x * 1.3f;
      want[v] = x - (-0.3f * count[v] + (count[v] > 0 ? 0.7f : 0.0f));
    }
    pen.apply(row.data(), V);
    for (int v = 0; v < V; ++v) CHECK(row[v] == doctest::Approx(want[v]).epsilon(1e-6));
    pen.accept(gen[step]);
    ++count[gen[step]];
    seen[gen[step]] = true;
  }
}
