#pragma once
// Shared helpers for the kernel tests: deterministic random fills and a central finite-difference
// gradient check of fp32 kernels against a scalar loss accumulated in double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace zf::test {

inline std::vector<float> randn(std::size_t n, unsigned seed, float scale = 1.0f,
                                float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// sum_i w[i] * y[i] in double: the scalar loss whose gradient with respect to y is w.
inline double weighted_sum(const float* y, const float* w, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(w[i]) * y[i];
  return s;
}

// For each checked index i of x[0..n): numeric = (loss(x + h e_i) - loss(x - h e_i)) / (2h),
// using the step actually representable in float; requires |analytic - numeric| <= atol +
// rtol * |numeric|. `loss` recomputes the forward from the current contents of x. Every
// `stride`-th index is checked (1 = all). Returns the number of mismatches (also reported).
template <class Loss>
int check_grad(const char* what, float* x, std::size_t n, const float* analytic, Loss&& loss,
               float h = 1e-2f, double rtol = 1e-2, double atol = 1e-3, std::size_t stride = 1) {
  int bad = 0;
  for (std::size_t i = 0; i < n; i += stride) {
    const float x0 = x[i];
    const float xp = x0 + h, xm = x0 - h;
    x[i] = xp;
    const double lp = loss();
    x[i] = xm;
    const double lm = loss();
    x[i] = x0;
    const double numeric = (lp - lm) / (static_cast<double>(xp) - static_cast<double>(xm));
    const double err = std::abs(static_cast<double>(analytic[i]) - numeric);
    if (err > atol + rtol * std::abs(numeric)) {
      if (bad < 5) {
        MESSAGE(what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric);
      }
      ++bad;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " gradient mismatches");
  return bad;
}

// max_i |a[i] - b[i]| / (atol + rtol * |b[i]|) <= 1 for every i; reports the worst index.
inline bool all_close(const float* a, const double* b, std::size_t n, double rtol, double atol) {
  double worst = 0.0;
  std::size_t wi = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double r = std::abs(static_cast<double>(a[i]) - b[i]) / (atol + rtol * std::abs(b[i]));
    if (std::isnan(r)) {
      worst = INFINITY;
      wi = i;
      break;
    }
    if (r > worst) {
      worst = r;
      wi = i;
    }
  }
  if (!(worst <= 1.0)) MESSAGE("worst at " << wi << ": got " << a[wi] << " want " << b[wi]);
  return worst <= 1.0;
}

inline bool all_close(const float* a, const float* b, std::size_t n, double rtol, double atol) {
  std::vector<double> bd(b, b + n);
  return all_close(a, bd.data(), n, rtol, atol);
}

}  // namespace zf::test
