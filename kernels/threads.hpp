#pragma once
// Compute threads of the kernels (OpenBLAS's pool for the GEMMs). 0 means all cores.
namespace zf::kernels {
void set_num_threads(int n);
int num_threads();
namespace cpu {
void set_num_threads(int n);
int num_threads();
}  // namespace cpu
}  // namespace zf::kernels
