// Embedding family, CUDA twin of embedding_cpu.cpp with the same contracts (ids, tables and
// outputs in GPU memory; wpe / dwpe may be nullptr).
// Invariants: the forward is one thread per output element. The backward is deterministic and
// gives the cpu kernel's bits: a repeated id's rows are added into its dwte row in increasing
// position order, as the cpu loop does, by one thread per (distinct id, column) walking the
// positions that embedding_grad_plan (host, embedding_cpu.cpp) grouped by id; dwpe by one thread
// per (position, column) over the batch in order. The ids come back to the host for the plan (a
// copy of b*t ints and a wait on the stream); the plan's arrays go up through per-call scratch.
#include <vector>

#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/embedding.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kMaxBlocks = 8192;

__global__ void embedding_kernel(const int* __restrict__ ids, const float* __restrict__ wte,
                                 const float* __restrict__ wpe, float* __restrict__ out, int t,
                                 std::size_t c, std::size_t rows, int pos0) {
  const std::size_t total = rows * c, stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const std::size_t r = i / c, j = i % c;
    float v = wte[static_cast<std::size_t>(ids[r]) * c + j];
    if (wpe) v = v + wpe[static_cast<std::size_t>(pos0 + static_cast<int>(r % t)) * c + j];
    out[i] = v;
  }
}

// blockIdx.x: a distinct id (plan.ids[u]), its positions plan.order[starts[u] .. starts[u+1]).
__global__ void dwte_kernel(const int* __restrict__ ids, const int* __restrict__ starts,
                            const int* __restrict__ order, const float* __restrict__ dout,
                            float* __restrict__ dwte, std::size_t c) {
  const int u = static_cast<int>(blockIdx.x);
  float* row = dwte + static_cast<std::size_t>(ids[u]) * c;
  for (std::size_t j = static_cast<std::size_t>(blockIdx.y) * blockDim.x + threadIdx.x; j < c;
       j += static_cast<std::size_t>(gridDim.y) * blockDim.x) {
    float acc = row[j];
    for (int k = starts[u]; k < starts[u + 1]; ++k) {
      acc += dout[static_cast<std::size_t>(order[k]) * c + j];
    }
    row[j] = acc;
  }
}

// dwpe[pos0 + ti] += dout[bi, ti] for bi = 0 .. b-1 in order; one thread per (ti, column).
__global__ void dwpe_kernel(const float* __restrict__ dout, float* __restrict__ dwpe, int b, int t,
                            std::size_t c, int pos0) {
  const std::size_t total = static_cast<std::size_t>(t) * c;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const std::size_t ti = i / c, j = i % c;
    float* p = dwpe + (static_cast<std::size_t>(pos0) + ti) * c + j;
    float acc = *p;
    for (int bi = 0; bi < b; ++bi) acc += dout[(static_cast<std::size_t>(bi) * t + ti) * c + j];
    *p = acc;
  }
}

// Host staging reused across calls (allocate once).
struct staging {
  std::vector<int> ids, packed;
  embedding_grad_plan plan;
};
thread_local staging t_staging;

}  // namespace

void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0) {
  const std::size_t rows = static_cast<std::size_t>(b) * t;
  if (rows == 0 || c <= 0) return;
  const std::size_t total = rows * static_cast<std::size_t>(c);
  ZF_LAUNCH(embedding_kernel, grid_for(total, kBlock, kMaxBlocks), kBlock, 0)
  (ids, wte, wpe, out, t, static_cast<std::size_t>(c), rows, pos0);
  check_launch("embedding_forward launch");
}

void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0) {
  const std::size_t rows = static_cast<std::size_t>(b) * t;
  if (rows == 0 || c <= 0) return;
  const std::size_t cc = static_cast<std::size_t>(c);
  cudaStream_t st = current_stream();
  staging& s = t_staging;
  s.ids.resize(rows);
  check(cudaMemcpyAsync(s.ids.data(), ids, rows * sizeof(int), cudaMemcpyDeviceToHost, st),
        "embedding_backward ids");
  check(cudaStreamSynchronize(st), "embedding_backward ids");
  plan_embedding_grad(s.ids.data(), static_cast<int>(rows), s.plan);
  // One upload: [ids (u) | starts (u + 1) | order (rows)].
  const std::size_t u = s.plan.ids.size();
  s.packed.clear();
  s.packed.insert(s.packed.end(), s.plan.ids.begin(), s.plan.ids.end());
  s.packed.insert(s.packed.end(), s.plan.starts.begin(), s.plan.starts.end());
  s.packed.insert(s.packed.end(), s.plan.order.begin(), s.plan.order.end());
  int* dev = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&dev), s.packed.size() * sizeof(int), st),
        "embedding_backward scratch");
  cudaError_t e = cudaMemcpyAsync(dev, s.packed.data(), s.packed.size() * sizeof(int),
                                  cudaMemcpyHostToDevice, st);
  if (e == cudaSuccess) {
    const unsigned col_blocks = grid_for(cc, kBlock, 64);
    ZF_LAUNCH(dwte_kernel, dim3(static_cast<unsigned>(u), col_blocks), kBlock, 0)
    (dev, dev + u, dev + 2 * u + 1, dout, dwte, cc);
    e = cudaGetLastError();
  }
  if (e == cudaSuccess && dwpe) {
    ZF_LAUNCH(dwpe_kernel, grid_for(static_cast<std::size_t>(t) * cc, kBlock, kMaxBlocks), kBlock,
              0)
    (dout, dwpe, b, t, cc, pos0);
    e = cudaGetLastError();
  }
  // Pageable uploads are staged before cudaMemcpyAsync returns, so the host arrays may be reused;
  // the scratch is freed in stream order after the kernels.
  (void)cudaFreeAsync(dev, st);
  check(e, "embedding_backward");
}

}  // namespace zf::kernels::ZF_CUDA_NS
