// Next-token sampling: greedy paths, seeding, top-k / top-p support and the distribution itself;
// the log-probability helpers (log_sum_exp, top_k_ids).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "runtime/sampling.hpp"

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
