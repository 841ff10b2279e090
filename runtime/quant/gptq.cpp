// GPTQ for one linear layer (see gptq.hpp for the algorithm and its choices).
#include "runtime/quant/gptq.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/core/error.hpp"

// LAPACK from OpenBLAS (Fortran symbols; no LAPACKE header on the machines): the trailing
// argument is the hidden length of the character argument.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, std::size_t);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, std::size_t);
}

namespace zf::quant {

namespace k = zf::kernels;
using sz = std::size_t;

hessian::hessian(int k) : k_(k), sum_(sz(k) * k, 0.0), gram_(sz(k) * k) {}

void hessian::add(const float* x, int rows, int ldx) {
  if (rows <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k_, k_, rows, 1.0f, x, ldx ? ldx : k_, x,
              ldx ? ldx : k_, 0.0f, gram_.data(), k_);
  for (sz i = 0; i < sum_.size(); ++i) sum_[i] += gram_[i];
  rows_ += rows;
}

std::vector<double> hessian::matrix() const {
  std::vector<double> h(sum_);
  const double s = rows_ > 0 ? 2.0 / double(rows_) : 0.0;
  for (double& v : h) v *= s;
  return h;
}

namespace {

// The upper Cholesky factor U of A^{-1} (A^{-1} = U^T U), A [n, n] symmetric positive definite,
// in place: A becomes U in its upper triangle (column-major (i, j) = a[i + j n], i <= j; A is
// symmetric, so its row-major and column-major storage agree). False when A is not positive
// definite.
bool inverse_cholesky_upper(std::vector<double>& a, int n) {
  int info = 0;
  dpotrf_("U", &n, a.data(), &n, &info, 1);
  if (info != 0) return false;
  dpotri_("U", &n, a.data(), &n, &info, 1);
  if (info != 0) return false;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < j; ++i) a[sz(j) + sz(i) * n] = a[sz(i) + sz(j) * n];
  dpotrf_("U", &n, a.data(), &n, &info, 1);
  return info == 0;
}

}  // namespace

gptq_report gptq_quantize(k::qformat f, const float* w, sz stride_k, sz stride_n, int K, int n,
                          int group, bool asym, bool pow2, const std::vector<double>& h,
                          const gptq_options& opt, std::uint8_t* data, float* scales,
                          std::uint8_t* zeros) {
  k::check_quant_shape(f, K, n, group, asym);
  if (h.size() != sz(K) * K)
    throw error(fmt::format("gptq: the Hessian has {} entries, not {} x {}", h.size(), K, K));
  gptq_report rep;
  std::vector<float> W(sz(n) * K);  // [n, K]: one output per row
  for (int o = 0; o < n; ++o)
    for (int j = 0; j < K; ++j) W[sz(o) * K + j] = w[sz(j) * stride_k + sz(o) * stride_n];
  std::vector<double> diag(static_cast<sz>(K));
  for (int j = 0; j < K; ++j) {
    diag[sz(j)] = h[sz(j) * K + j];
    if (diag[sz(j)] == 0) {  // an input never seen: its weights cannot matter
      ++rep.dead;
      for (int o = 0; o < n; ++o) W[sz(o) * K + j] = 0;
    }
  }
  // static groups: the scales round-to-nearest would pick, from the original weights
  const int G = K / group;
  for (int o = 0; o < n; ++o)
    for (int g = 0; g < G; ++g) {
      float s = 1;
      int z = 0;
      k::group_scale(f, W.data() + sz(o) * K + sz(g) * group, group, asym, pow2, s, z);
      scales[sz(o) * G + g] = s;
      if (asym) zeros[sz(o) * G + g] = static_cast<std::uint8_t>(z);
    }
  std::vector<int> perm(static_cast<sz>(K));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int a, int b) { return diag[sz(a)] > diag[sz(b)]; });
  std::vector<float> Wp(W.size());
  for (int o = 0; o < n; ++o)
    for (int a = 0; a < K; ++a) Wp[sz(o) * K + a] = W[sz(o) * K + sz(perm[sz(a)])];
  double mean = 0;
  for (double d : diag) mean += d == 0 ? 1 : d;
  mean /= K;
  std::vector<double> A;
  rep.damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    A.assign(sz(K) * K, 0.0);
    for (int a = 0; a < K; ++a)
      for (int b = 0; b < K; ++b) {
        const int pa = perm[sz(a)], pb = perm[sz(b)];
        A[sz(a) * K + b] = pa == pb && diag[sz(pa)] == 0 ? 1.0 : h[sz(pa) * K + pb];
      }
    for (int a = 0; a < K; ++a) A[sz(a) * K + a] += rep.damp * mean;
    if (inverse_cholesky_upper(A, K)) break;
    if (attempt == 4)
      throw error(
          fmt::format("gptq: the Hessian is not positive definite even with damping {} "
                      "(calibration data too small or degenerate?)",
                      rep.damp));
    rep.damp *= 10;
  }
  std::vector<float> U(sz(K) * K, 0.0f);  // row-major upper factor: U[i, j], j >= i
  for (int i = 0; i < K; ++i)
    for (int j = i; j < K; ++j) U[sz(i) * K + j] = float(A[sz(i) + sz(j) * K]);
  std::vector<std::uint8_t> codes(sz(n) * K);
  const int B = std::max(1, opt.block);
  std::vector<float> err(sz(n) * B);
  for (int i1 = 0; i1 < K; i1 += B) {
    const int i2 = std::min(K, i1 + B), nb = i2 - i1;
    for (int i = i1; i < i2; ++i) {
      const float d = U[sz(i) * K + i];
      const int c = perm[sz(i)], g = c / group;
      for (int o = 0; o < n; ++o) {
        float* row = Wp.data() + sz(o) * K;
        const float s = scales[sz(o) * G + g];
        const int z = asym ? zeros[sz(o) * G + g] : 0;
        const unsigned code = k::quantize_value(f, row[i], s, z, asym);
        codes[sz(o) * K + c] = static_cast<std::uint8_t>(code);
        const float e = (row[i] - k::dequantize_value(f, code, s, z, asym)) / d;
        err[sz(o) * nb + (i - i1)] = e;
        const float* u = U.data() + sz(i) * K;
        for (int j = i + 1; j < i2; ++j) row[j] -= e * u[j];
      }
    }
    if (i2 < K)  // the block's errors reach the later inputs in one product
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, K - i2, nb, -1.0f, err.data(), nb,
                  U.data() + sz(i1) * K + i2, K, 1.0f, Wp.data() + i2, K);
  }
  const sz rb = k::packed_row_bytes(f, K);
  for (int o = 0; o < n; ++o) k::pack_row(f, codes.data() + sz(o) * K, K, data + sz(o) * rb);
  return rep;
}

}  // namespace zf::quant
