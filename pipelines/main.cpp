#include "kernels/gemm_lib.hpp"
#include "pipelines/cli.hpp"

int main(int argc, char** argv) {
  zf::kernels::ensure_openmp_spin();  // oneDNN's threads: see gemm_lib.hpp (re-executes once)
  return zf::run_cli(argc, argv);
}
