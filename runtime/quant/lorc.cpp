// LoRC: the truncated SVD of the quantization error (see lorc.hpp).
#include "runtime/quant/lorc.hpp"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.hpp"

extern "C" {
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s,
             float* u, const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork,
             int* iwork, int* info, std::size_t);
}

namespace zf::quant {

using sz = std::size_t;

low_rank best_low_rank(const float* e, int k, int n, int rank) {
  // e row-major [k, n] is column-major [n, k] = e^T = U S V^T, so e = V S U^T: A = V S^1/2,
  // B = S^1/2 U^T, from vt ([mn, k] column-major) and u ([n, mn] column-major).
  const int mn = std::min(k, n);
  low_rank r;
  r.k = k;
  r.n = n;
  r.rank = std::clamp(rank, 0, mn);
  std::vector<float> a(e, e + sz(k) * n), s(static_cast<sz>(mn)), u(sz(n) * mn), vt(sz(mn) * k);
  std::vector<int> iwork(sz(8) * mn);
  int info = 0, lwork = -1;
  float query = 0;
  sgesdd_("S", &n, &k, a.data(), &n, s.data(), u.data(), &n, vt.data(), &mn, &query, &lwork,
          iwork.data(), &info, 1);
  lwork = static_cast<int>(query) + 1;
  std::vector<float> work(static_cast<sz>(lwork));
  sgesdd_("S", &n, &k, a.data(), &n, s.data(), u.data(), &n, vt.data(), &mn, work.data(), &lwork,
          iwork.data(), &info, 1);
  if (info != 0)
    throw error(fmt::format("lorc: the SVD of a {} x {} error did not converge", k, n));
  r.a.resize(sz(k) * r.rank);
  r.b.resize(sz(r.rank) * n);
  for (int c = 0; c < r.rank; ++c) {
    const float h = std::sqrt(s[sz(c)]);
    for (int j = 0; j < k; ++j) r.a[sz(j) * r.rank + c] = vt[sz(c) + sz(j) * mn] * h;
    for (int o = 0; o < n; ++o) r.b[sz(c) * n + o] = h * u[sz(o) + sz(c) * n];
  }
  return r;
}

low_rank lorc(const float* w, sz stride_k, sz stride_n, const kernels::qmatrix& q, int rank) {
  std::vector<float> e(sz(q.k) * q.n);  // [k, n]
  kernels::dequantize(q, e.data());
  for (int j = 0; j < q.k; ++j)
    for (int o = 0; o < q.n; ++o)
      e[sz(j) * q.n + o] = w[sz(j) * stride_k + sz(o) * stride_n] - e[sz(j) * q.n + o];
  return best_low_rank(e.data(), q.k, q.n, rank);
}

}  // namespace zf::quant
