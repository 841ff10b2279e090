#include <doctest/doctest.h>

#include <vector>

#include "grad_check.hpp"
#include "kernels/embedding.hpp"

using namespace zf::kernels;
using zf::test::randn;

TEST_CASE("embedding forward gathers token rows plus position rows from pos0") {
  const int vocab = 11, max_pos = 9, c = 13, b = 2, t = 3, pos0 = 4;
  auto wte = randn(vocab * c, 1), wpe = randn(max_pos * c, 2);
  const std::vector<int> ids = {3, 0, 10, 3, 3, 7};
  std::vector<float> out(b * t * c, std::nanf(""));
  embedding_forward(ids.data(), wte.data(), wpe.data(), out.data(), b, t, c, pos0);
  for (int bi = 0; bi < b; ++bi) {
    for (int ti = 0; ti < t; ++ti) {
      for (int j = 0; j < c; ++j) {
        const int r = bi * t + ti;
        CHECK(out[r * c + j] == wte[ids[r] * c + j] + wpe[(pos0 + ti) * c + j]);
      }
    }
  }
}

TEST_CASE("embedding backward accumulates, duplicates add up, and matches finite differences") {
  const int vocab = 7, max_pos = 6, c = 5, b = 2, t = 3, pos0 = 1;
  auto wte = randn(vocab * c, 3), wpe = randn(max_pos * c, 4);
  const std::vector<int> ids = {2, 2, 5, 0, 2, 6};  // id 2 three times
  auto wout = randn(b * t * c, 5);
  std::vector<float> out(b * t * c);
  auto loss = [&] {
    embedding_forward(ids.data(), wte.data(), wpe.data(), out.data(), b, t, c, pos0);
    return zf::test::weighted_sum(out.data(), wout.data(), out.size());
  };
  std::vector<float> dwte(vocab * c, 1.0f), dwpe(max_pos * c, -2.0f);
  embedding_backward(ids.data(), wout.data(), dwte.data(), dwpe.data(), b, t, c, pos0);
  // Rows never used keep their prior value exactly (id 1, position 0 and 4+).
  for (int j = 0; j < c; ++j) {
    CHECK(dwte[1 * c + j] == 1.0f);
    CHECK(dwpe[0 * c + j] == -2.0f);
    CHECK(dwpe[4 * c + j] == -2.0f);
    CHECK(
        dwte[2 * c + j] ==
        doctest::Approx(1.0f + wout[0 * c + j] + wout[1 * c + j] + wout[4 * c + j]).epsilon(1e-6));
  }
  for (auto& x : dwte) x -= 1.0f;
  for (auto& x : dwpe) x += 2.0f;
  zf::test::check_grad("dwte", wte.data(), wte.size(), dwte.data(), loss, 1e-2f, 1e-3, 1e-4);
  zf::test::check_grad("dwpe", wpe.data(), wpe.size(), dwpe.data(), loss, 1e-2f, 1e-3, 1e-4);
}
