#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>

#include "kernels/gemm_lib.hpp"

// The tests' GEMMs use the default libraries (kernels/gemm_table.hpp), in this process and in
// the zeroflow processes they start, so no result depends on a timing: tuning has its own tests.
static const int zf_gemm_tuning_off = ::setenv("ZF_GEMM_TUNING", "off", 0);
// And oneDNN's threads spinning between calls (kernels/gemm_lib.hpp): re-executes once.
static const int zf_openmp_spin = (zf::kernels::ensure_openmp_spin(), 0);
