// Next-token sampling: greedy paths, seeding, top-k / top-p support and the distribution itself.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
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
