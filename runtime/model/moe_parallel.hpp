#pragma once
// MoE layers routed over a data-parallel group, with expert parallelism inside it (the math of
// docs/moe.md, "Parallel"). A training step's tokens are spread over W ranks; routing is decided
// over all of them at once, so W ranks give the one-rank model's numbers on the concatenated
// batch (capacity from the step's N = W n tokens, first choices of every rank before any second
// choice, rank 0's tokens before rank 1's; the balance loss from the step's expert counts).
// Expert parallelism: ranks [g EP, (g+1) EP) form an expert group and rank g EP + d computes
// experts [d E/EP, (d+1) E/EP) of every MoE layer for all the group's tokens: the tokens travel to
// their experts and back by all_to_all (with uneven splits), gradients likewise. Every rank still
// holds every expert's parameters (ZeRO shards them as any others); a rank's gradients of the
// experts it does not compute stay zero, and the data-parallel reduction sums each expert's
// gradient from the ranks that computed it.
// Shapes: n local rows, N = W n, C = hidden, E experts of the layer, El = E / EP, k = top_k.
#include <cstddef>
#include <span>
#include <vector>

#include "runtime/model/moe.hpp"

namespace zf::moe {

// The ranks a training forward routes over; runtime/train/zero implements it over runtime/dist's
// communicator. Every call is a collective of all W ranks.
struct group {
  virtual ~group() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual int expert_parallel() const = 0;  // EP: divides world and every layer's experts
  // in [chunk] -> out [W chunk], rank r's block at r chunk.
  virtual void all_gather(const float* in, float* out, std::size_t chunk) = 0;
  virtual void all_reduce(double* data, std::size_t n) = 0;  // elementwise sum
  // in: send[r] floats to rank r back to back -> out: recv[r] floats from rank r back to back.
  virtual void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                          std::span<const std::size_t> recv) = 0;
};

// A layer's plan and saved activations beyond layer_state when it is routed over a group.
struct parallel_state {
  int* send_rows = nullptr;  // [W] rows this rank sends to each rank
  int* recv_rows = nullptr;  // [W] rows it receives from each
  int* perm = nullptr;       // [rows_max] expert-major row -> row of the received buffer
  int* loffsets = nullptr;   // [El + 1] this rank's experts' rows, expert-major
  float* xs = nullptr;       // [rows_max, C] its experts' inputs, expert-major
  float* h = nullptr;        // [rows_max, Ue] their pre-activations
  int send_total = 0, recv_total = 0;
};

// Scratch shared by the layers (one runs at a time).
struct parallel_scratch {
  float* mine = nullptr;  // [n k] this rank's selections as floats
  float* gsel = nullptr;  // [N k] everyone's
  int *gsel_i = nullptr, *gslot = nullptr, *gtoken = nullptr;  // [N k] each
  int *goffsets = nullptr, *cnt = nullptr;                     // [E + 1], [EP El]
  int* send_token = nullptr;                                   // [n k]
  float* sendbuf = nullptr;                                    // [n k, C]
  float* recvbuf = nullptr;                                    // [rows_max, C]
  float* expert_out = nullptr;                                 // [rows_max, C]
  std::vector<std::size_t> send, recv;                         // [W] floats, per call
  std::vector<double> sums;  // [E + 2] the step's figures' sums (reserved by lay_out)
};

// Rows a rank's experts may receive for n local rows: EP n k, or fewer under the larger of
// the training and evaluation capacities (both route over the group).
int rows_max(const model_spec& s, int E, int n, int world, int ep);
// The most token rows one expert computation sees at once over every MoE layer: n k alone
// (world 1), or rows_max's largest.
int expert_rows(const model_spec& s, int n, int world, int ep);
void lay_out(arena& a, const model_spec& s, int E, int n, int world, int ep, parallel_state& ps);
void lay_out(arena& a, const model_spec& s, int n, int world, int ep, parallel_scratch& sc);
double parallel_floats(const model_spec& s, int n, int world, int ep);  // both, every MoE layer

// moe::forward over the group g (capacity factor for the step's N rows); fills st (counts are
// the step's, dropped the step's drops) and ps.
void forward_parallel(const model_spec& s, const model_spec& es, const block::weights& w,
                      const float* ln2, int n, double factor, group& g, layer_state& st,
                      parallel_state& ps, const scratch& sc, parallel_scratch& psc, float* x);
// moe::backward's counterpart (the same group, after that forward).
void backward_parallel(const model_spec& s, const model_spec& es, const block::weights& w,
                       const block::grads& g, const float* ln2, const layer_state& st,
                       const parallel_state& ps, const scratch& sc, parallel_scratch& psc,
                       group& grp, const float* d, float aux_scale, float* dln2);

}  // namespace zf::moe
