// GEMM libraries, 16-bit compute precisions and the tuning table (kernels/gemm_lib.hpp,
// kernels/gemm_table.hpp) against float64 references.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "grad_check.hpp"
#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/matmul.hpp"
#include "kernels/threads.hpp"
#include "reference.hpp"
#include "test_util.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

namespace {

std::vector<float> rounded(const std::vector<float>& x, precision p) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    r[i] = p == precision::bf16  ? bf16_to_f32(f32_to_bf16(x[i]))
           : p == precision::f16 ? f16_to_f32(f32_to_f16(x[i]))
                                 : x[i];
  return r;
}

struct case_shape {
  int m, n, k;
};
// Tails of every tile width, a skinny decode row, a wide k.
const case_shape k_shapes[] = {{1, 37, 64}, {7, 16, 33}, {33, 65, 17}, {64, 96, 300}, {5, 3, 1}};

// Library l at precision p over every transpose, strided and dense, alpha/beta mixes: equals the
// float64 GEMM of the operands rounded to p, within fp32 accumulation error.
void check_library(gemm_lib l, precision p) {
  for (const auto& s : k_shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (int strided = 0; strided < 2; ++strided) {
          CAPTURE(gemm_lib_name(l));
          CAPTURE(precision_name(p));
          CAPTURE(s.m);
          CAPTURE(s.n);
          CAPTURE(s.k);
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(strided);
          const int ar = ta ? s.k : s.m, ac = ta ? s.m : s.k, br = tb ? s.n : s.k,
                    bc = tb ? s.k : s.n;
          const int lda = ac + 3 * strided, ldb = bc + 5 * strided, ldc = s.n + 2 * strided;
          const auto a = randn(std::size_t(ar) * lda, 11);
          const auto b = randn(std::size_t(br) * ldb, 12);
          auto c = randn(std::size_t(s.m) * ldc, 13);
          const float alpha = strided ? 0.5f : 1.0f, beta = strided ? 1.0f : 0.0f;
          std::vector<double> want(c.size());
          for (std::size_t i = 0; i < c.size(); ++i) want[i] = c[i];
          const auto ar16 = rounded(a, p), br16 = rounded(b, p);
          ref::gemm(ta, tb, s.m, s.n, s.k, alpha, ar16.data(), lda, br16.data(), ldb, beta,
                    c.data(), want.data(), ldc);
          cpu::gemm_with(l, p, ta, tb, s.m, s.n, s.k, alpha, a.data(), strided ? lda : 0, b.data(),
                         strided ? ldb : 0, beta, c.data(), strided ? ldc : 0);
          CHECK(all_close(c.data(), want.data(), c.size(), 2e-5, 2e-5));
        }
}

}  // namespace

TEST_CASE("every available GEMM library equals the float64 GEMM in f32") {
  for (int i = 0; i < gemm_lib_count; ++i) {
    const gemm_lib l = gemm_lib(i);
    if (!gemm_lib_available(l, precision::f32)) {
      MESSAGE("skipped: ", gemm_lib_name(l), " is not installed here");
      continue;
    }
    check_library(l, precision::f32);
  }
  CHECK(gemm_lib_available(gemm_lib::openblas, precision::f32));
  CHECK(gemm_lib_available(gemm_lib::onednn, precision::f32));
}

TEST_CASE("bf16 and f16 GEMMs are the float64 GEMM of the operands rounded to the type") {
  check_library(gemm_lib::onednn, precision::bf16);
  check_library(gemm_lib::openblas, precision::f16);
  check_library(gemm_lib::onednn, precision::f16);
  CHECK_FALSE(gemm_lib_available(gemm_lib::openblas, precision::bf16));
  CHECK_THROWS_AS(cpu::gemm_with(gemm_lib::openblas, precision::bf16, false, false, 1, 1, 1, 1.0f,
                                 std::vector<float>{1}.data(), 0, std::vector<float>{1}.data(), 0,
                                 0.0f, std::vector<float>{0}.data(), 0),
                  kernel_error);
}

TEST_CASE("the rounding is real: 1 + 2^-10 is 1 in bf16 and itself in f16 and f32") {
  const float x = 1.0f + 1.0f / 1024.0f;
  for (precision p : {precision::f32, precision::bf16, precision::f16}) {
    const std::vector<float> a(16, x), b(16, 1.0f);
    std::vector<float> c(1, -1.0f);
    precision_scope scope(p);
    gemm(false, false, 1, 1, 16, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
    CHECK(c[0] == doctest::Approx(p == precision::bf16 ? 16.0 : 16.0 * x).epsilon(1e-7));
  }
  CHECK(compute_precision() == precision::f32);
}

TEST_CASE("f16 overflows to inf past 65504 (what loss scaling guards against)") {
  const std::vector<float> a{70000.0f}, b{1.0f};
  std::vector<float> c(1);
  cpu::gemm_with(gemm_lib::openblas, precision::f16, false, false, 1, 1, 1, 1.0f, a.data(), 0,
                 b.data(), 0, 0.0f, c.data(), 0);
  CHECK(std::isinf(c[0]));
  cpu::gemm_with(gemm_lib::onednn, precision::bf16, false, false, 1, 1, 1, 1.0f, a.data(), 0,
                 b.data(), 0, 0.0f, c.data(), 0);
  CHECK(c[0] == doctest::Approx(70000.0).epsilon(4e-3));
}

TEST_CASE("gemm_bf16 on bf16 operands equals the f32 path on their values") {
  const int m = 9, n = 70, k = 45;
  const auto a = rounded(randn(std::size_t(m) * k, 3), precision::bf16);
  const auto b = rounded(randn(std::size_t(n) * k, 4), precision::bf16);  // [n, k]: trans_b
  std::vector<std::uint16_t> a16(a.size()), b16(b.size());
  cpu::to_bf16(a.data(), a16.data(), a.size());
  cpu::to_bf16(b.data(), b16.data(), b.size());
  std::vector<float> c(std::size_t(m) * n), want(c.size());
  cpu::gemm_bf16(false, true, m, n, k, 1.0f, a16.data(), 0, b16.data(), 0, 0.0f, c.data(), 0);
  cpu::gemm_with(gemm_lib::openblas, precision::f32, false, true, m, n, k, 1.0f, a.data(), 0,
                 b.data(), 0, 0.0f, want.data(), 0);
  CHECK(all_close(c.data(), want.data(), c.size(), 1e-5, 1e-5));
}

TEST_CASE("to_bf16 rounds every kind of value as the scalar conversion") {
  std::vector<float> x = randn(1000, 9, 100.0f);
  x.insert(x.end(), {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f + 1.0f / 256.0f,
                     1.0f + 3.0f / 256.0f, 3.4e38f, 1e-40f, -1e-45f});
  std::vector<std::uint16_t> got(x.size());
  cpu::to_bf16(x.data(), got.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(x[i]);
    if (std::isnan(x[i]))
      CHECK(std::isnan(bf16_to_f32(got[i])));
    else
      CHECK(got[i] == f32_to_bf16(x[i]));
  }
}

TEST_CASE("gemm table: text round trip, foreign and corrupt tables") {
  gemm_entry e;
  e.threads = 2;
  e.prec = precision::bf16;
  e.trans_a = true;
  e.m = 1024, e.n = 768, e.k = 3072;
  e.best = gemm_lib::onednn;
  e.trials = {{gemm_lib::onednn, 2010.5, 1e-7, true}};
  const std::string text = format_gemm_table("cpu X | avx512f", {e});
  std::vector<gemm_entry> got;
  REQUIRE(parse_gemm_table(text, "cpu X | avx512f", got));
  REQUIRE(got.size() == 1);
  CHECK(got[0].prec == precision::bf16);
  CHECK(got[0].trans_a);
  CHECK_FALSE(got[0].trans_b);
  CHECK(got[0].k == 3072);
  CHECK(got[0].best == gemm_lib::onednn);
  CHECK(got[0].trials[0].gflops == doctest::Approx(2010.5));
  got.clear();
  CHECK_FALSE(parse_gemm_table(text, "another cpu", got));
  CHECK(got.empty());
  auto why = [&](const std::string& t) {
    try {
      std::vector<gemm_entry> o;
      parse_gemm_table(t, "c", o);
    } catch (const kernel_error& err) {
      return std::string(err.what());
    }
    return std::string();
  };
  const std::string head = "zeroflow gemm table v1\ncpu c\n";
  CHECK(zf::testing::contains(why("garbage"), "line 1"));
  CHECK(zf::testing::contains(why(head + "2 f32 NN 1 2\n"), "line 3: too few fields"));
  CHECK(zf::testing::contains(why(head + "2 f99 NN 1 2 3 openblas\n"), "unknown precision"));
  CHECK(zf::testing::contains(why(head + "2 f32 XN 1 2 3 openblas\n"), "transposes"));
  CHECK(zf::testing::contains(why(head + "2 f32 NN 1 2 3 mkl\n"), "unknown library 'mkl'"));
  CHECK(zf::testing::contains(why(head + "2 f32 NN 1 2 3 onednn onednn:10:1:wrong\n"),
                              "no passing trial"));
}

TEST_CASE("tuning checks every library and never picks one that computes wrong numbers") {
  clear_gemm_table();
  set_gemm_tuning_fault(gemm_lib::onednn, true);
  const gemm_entry bad = tune_gemm(precision::f32, false, false, 96, 128, 64);
  set_gemm_tuning_fault(gemm_lib::onednn, false);
  bool saw = false;
  for (const auto& t : bad.trials) {
    if (t.lib != gemm_lib::onednn) continue;
    saw = true;
    CHECK_FALSE(t.ok);
    CHECK(t.max_err > 1e-3);
  }
  CHECK(saw);
  CHECK(bad.best != gemm_lib::onednn);
  CHECK(bad.m == 128);  // bucketed
  const gemm_entry good = tune_gemm(precision::bf16, false, true, 16, 64, 64);
  REQUIRE(good.trials.size() == 1);
  CHECK(good.trials[0].ok);
  CHECK(good.trials[0].gflops > 0);
  CHECK(good.best == gemm_lib::onednn);
  clear_gemm_table();
}

TEST_CASE("lazy tuning measures a new shape once, saves it and a later process reads it") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("zf_gemm_table_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string path = (dir / "sub" / "gemm_table.txt").string();
  CHECK(configure_gemm_tuning(gemm_tuning::lazy, path).empty());
  const int m = 90, n = 48, k = 40;  // m and m - 10 share the bucket 128
  const auto a = randn(std::size_t(m) * k, 1), b = randn(std::size_t(k) * n, 2);
  std::vector<float> c(std::size_t(m) * n);
  std::vector<double> want(c.size());
  gemm(false, false, m, n, k, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
  ref::gemm(false, false, m, n, k, 1.0, a.data(), k, b.data(), n, 0.0, c.data(), want.data(), n);
  CHECK(all_close(c.data(), want.data(), c.size(), 2e-5, 2e-5));
  auto entries = gemm_table_entries();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].m == 128);
  CHECK(std::filesystem::exists(path));
  const gemm_lib chosen = entries[0].best;
  // A second GEMM of the same bucket does not measure again.
  gemm(false, false, m - 10, n, k, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
  CHECK(gemm_table_entries().size() == 1);
  // "Another process": cached mode from the file.
  CHECK(configure_gemm_tuning(gemm_tuning::cached, path).empty());
  REQUIRE(gemm_table_entries().size() == 1);
  CHECK(choose_gemm_lib(precision::f32, false, false, m, n, k) == chosen);
  // one library per process: a shape the table lacks runs the same library
  CHECK(choose_gemm_lib(precision::f32, false, false, 3, 5, 7) == chosen);
  // A corrupt or foreign file: a warning, nothing loaded.
  { std::ofstream(path) << "zeroflow gemm table v1\ncpu " << cpu_identity() << "\n2 f32 NN x\n"; }
  auto w = configure_gemm_tuning(gemm_tuning::cached, path);
  REQUIRE(w.size() == 1);
  CHECK(zf::testing::contains(w[0], "corrupt"));
  CHECK(zf::testing::contains(w[0], "line 3"));
  CHECK(gemm_table_entries().empty());
  { std::ofstream(path) << "zeroflow gemm table v1\ncpu some other machine\n"; }
  w = configure_gemm_tuning(gemm_tuning::cached, path);
  REQUIRE(w.size() == 1);
  CHECK(zf::testing::contains(w[0], "another CPU"));
  CHECK(configure_gemm_tuning(gemm_tuning::off, "").empty());
  CHECK(choose_gemm_lib(precision::bf16, false, false, m, n, k) == gemm_lib::onednn);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a process runs one f32 library: the least total time over the shapes it runs") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("zf_gemm_process_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "gemm_table.txt").string();
  const int t = num_threads();
  // openblas wins the small shape, onednn the big one by far more time: onednn for both.
  {
    std::ofstream f(path);
    f << "zeroflow gemm table v1\ncpu " << cpu_identity() << "\n"
      << t << " f32 NN 64 64 64 openblas openblas:300:1e-8:ok onednn:100:1e-8:ok\n"
      << t << " f32 NN 1024 1024 1024 onednn openblas:100:1e-8:ok onednn:300:1e-8:ok\n"
      << t << " bf16 NN 64 64 64 onednn onednn:900:1e-8:ok\n";
  }
  REQUIRE(configure_gemm_tuning(gemm_tuning::cached, path).empty());
  CHECK(process_gemm_lib(precision::f32) == gemm_lib::onednn);  // nothing run yet: the table
  // a process that runs the small shape only (a small model beside a big one's entries)
  CHECK(choose_gemm_lib(precision::f32, false, false, 64, 64, 64) == gemm_lib::openblas);
  CHECK(process_gemm_lib(precision::f32) == gemm_lib::openblas);
  // once it runs both, one library for both: the least total time
  CHECK(choose_gemm_lib(precision::f32, false, false, 1024, 1024, 1024) == gemm_lib::onednn);
  CHECK(choose_gemm_lib(precision::f32, false, false, 64, 64, 64) == gemm_lib::onednn);
  CHECK(process_gemm_lib(precision::f32) == gemm_lib::onednn);
  CHECK(process_gemm_lib(precision::bf16) == gemm_lib::onednn);
  // a library judged wrong on any shape is out, whatever its speed elsewhere
  {
    std::ofstream f(path);
    f << "zeroflow gemm table v1\ncpu " << cpu_identity() << "\n"
      << t << " f32 NN 64 64 64 openblas openblas:300:1e-8:ok onednn:900:1:wrong\n"
      << t << " f32 NN 1024 1024 1024 onednn openblas:100:1e-8:ok onednn:300:1e-8:ok\n";
  }
  REQUIRE(configure_gemm_tuning(gemm_tuning::cached, path).empty());
  CHECK(process_gemm_lib(precision::f32) == gemm_lib::openblas);
  CHECK(configure_gemm_tuning(gemm_tuning::off, "").empty());
  CHECK(process_gemm_lib(precision::f32) == gemm_lib::openblas);
  std::filesystem::remove_all(dir);
}

TEST_CASE("16-bit GEMMs over a large a run in row slices with the same numbers") {
  // k = 40000: slices of 104 rows (4M elements of a each), so m = 230 takes three.
  const int m = 230, n = 9, k = 40000;
  for (int ta = 0; ta < 2; ++ta)
    for (precision p : {precision::bf16, precision::f16}) {
      CAPTURE(ta);
      CAPTURE(precision_name(p));
      const auto a = randn(std::size_t(m) * k, 21), b = randn(std::size_t(k) * n, 22);
      std::vector<float> c(std::size_t(m) * n, 1.0f);
      std::vector<double> want(c.size());
      const auto a16 = rounded(a, p), b16 = rounded(b, p);
      const int lda = ta ? m : k;
      ref::gemm(ta, false, m, n, k, 1.0, a16.data(), lda, b16.data(), n, 1.0, c.data(), want.data(),
                n);
      cpu::gemm_with(p == precision::bf16 ? gemm_lib::onednn : gemm_lib::openblas, p, ta, false, m,
                     n, k, 1.0f, a.data(), 0, b.data(), 0, 1.0f, c.data(), 0);
      CHECK(all_close(c.data(), want.data(), c.size(), 1e-4, 1e-3));
    }
}
