// Attention at bf16 precision and on oneDNN (issue 16): where the process's GEMM library is
// oneDNN, a whole training/prefill sequence runs as batched matmuls over the heads (offset 0,
// multi-head) and the other shapes (GQA, a KV offset) run their heads on the OpenMP team. Both
// against the float64 reference: bf16 within its rounding, f32 as tightly as OpenBLAS's path.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kernels/attention.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::columns;
using zf::test::randn;
namespace ref = zf::test::ref;

namespace {

// ||got - want|| / ||want||
double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

// Forward and backward of shape (tq queries at offset off over tk keys, nh query and nkv kv
// heads of hd) on fused buffers prefilled with NaN, each output's relative error against the
// float64 reference below tol; masked probabilities exactly 0.
void check(int tq, int off, int nh, int nkv, int hd, double tol, unsigned seed) {
  CAPTURE(tq);
  CAPTURE(off);
  CAPTURE(nh);
  CAPTURE(nkv);
  const int tk = off + tq, Q = nh * hd, KV = (nkv > 0 ? nkv : nh) * hd;
  const int ldq = Q + 3, ldk = KV + 5, ldo = Q + 2;
  attention_shape s{tq, tk, off, nh, hd, ldq, ldk, ldk, ldo, nkv};
  const auto q = randn(std::size_t(tq) * ldq, seed, 1.5f),
             k = randn(std::size_t(tk) * ldk, seed + 1);
  const auto v = randn(std::size_t(tk) * ldk, seed + 2),
             dout = randn(std::size_t(tq) * ldo, seed + 3);
  const float nan = std::nanf("");
  std::vector<float> out(std::size_t(tq) * ldo, nan), att(std::size_t(nh) * tq * tk, nan);
  attention_forward(s, q.data(), k.data(), v.data(), out.data(), att.data());
  std::vector<double> wout, watt;
  ref::attention_forward(s, q.data(), k.data(), v.data(), wout, watt);
  CHECK(rel_err(columns(out, tq, ldo, 0, Q), wout) < tol);
  CHECK(rel_err(att, watt) < tol);
  int masked_nonzero = 0;
  for (int h = 0; h < nh; ++h)
    for (int i = 0; i < tq; ++i)
      for (int j = off + i + 1; j < tk; ++j)
        masked_nonzero += att[(std::size_t(h) * tq + i) * tk + j] != 0.0f;
  CHECK(masked_nonzero == 0);

  std::vector<float> datt(att.size(), nan), dq(std::size_t(tq) * ldq, nan);
  std::vector<float> dk(std::size_t(tk) * ldk, nan), dv(dk.size(), nan);
  attention_backward(s, q.data(), k.data(), v.data(), att.data(), dout.data(), datt.data(),
                     dq.data(), dk.data(), dv.data());
  std::vector<double> wdq, wdk, wdv;
  ref::attention_backward(s, q.data(), k.data(), v.data(), dout.data(), wdq, wdk, wdv);
  CHECK(rel_err(columns(dq, tq, ldq, 0, Q), wdq) < tol);
  CHECK(rel_err(columns(dk, tk, ldk, 0, KV), wdk) < tol);
  CHECK(rel_err(columns(dv, tk, ldk, 0, KV), wdv) < tol);
}

void all_shapes(double tol) {
  check(300, 0, 3, 0, 16, tol, 11);    // batched: three of the per-head path's query blocks
  check(64, 0, 12, 12, 64, tol, 21);   // batched, GPT-2's head size
  check(300, 0, 4, 2, 8, tol, 31);     // GQA: heads on the team
  check(100, 200, 4, 0, 16, tol, 41);  // a KV offset (chunked prefill): heads on the team
}

}  // namespace

TEST_CASE("bf16 attention (batched and per-head team paths) equals float64 within bf16 rounding") {
  REQUIRE(cpu::gemm_nests(precision::bf16));  // bf16 runs on oneDNN
  const precision_scope bf16(precision::bf16);
  all_shapes(2e-2);
}

TEST_CASE("f32 attention on oneDNN, the tuned library, equals float64 as tightly as OpenBLAS") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("zf_attention_onednn_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "gemm_table.txt").string();
  {
    std::ofstream f(path);
    f << "zeroflow gemm table v1\ncpu " << cpu_identity() << "\n"
      << num_threads() << " f32 NN 64 64 64 onednn openblas:100:1e-8:ok onednn:300:1e-8:ok\n";
  }
  REQUIRE(configure_gemm_tuning(gemm_tuning::cached, path).empty());
  CHECK(cpu::gemm_nests(precision::f32));
  all_shapes(1e-5);
  REQUIRE(configure_gemm_tuning(gemm_tuning::off, "").empty());
  CHECK_FALSE(cpu::gemm_nests(precision::f32));  // OpenBLAS: heads in turn on its own threads
  all_shapes(1e-5);
  std::filesystem::remove_all(dir);
}
