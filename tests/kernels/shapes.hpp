#pragma once
// The one shape table of the kernels, per family: the harness (tests/kernels/test_harness*.cpp)
// checks the `check` rows against the double references, the benchmark (bench/kernels.cpp) times
// the `bench` rows. Check rows sweep small odd sizes, sizes on both sides of the 8/16-float vector
// widths and of the kernels' block sizes (attention's 128-row query blocks, paged attention's
// 4-row direct path, KV blocks), plus a few larger ones; they stay small enough for the O(n^3)
// double references. Bench rows are model-sized (GPT-2 124M, Llama-3-8B-like heads).
namespace zf::test::shapes {

enum use : unsigned { check = 1, bench = 2, both = check | bench };

// ops: space-separated transposes of (a, b): "nn", "tn" (a transposed), "nt", "tt".
struct gemm_case {
  int m, n, k;
  const char* ops;
  unsigned use;
};
inline constexpr gemm_case gemm_cases[] = {
    {1, 1, 1, "nn tn nt tt", check},       {3, 5, 7, "nn tn nt tt", check},
    {8, 8, 8, "nn tn nt tt", check},       {15, 17, 16, "nn tn nt tt", check},
    {16, 31, 33, "nn tn nt tt", check},    {64, 65, 63, "nn tn nt tt", check},
    {127, 129, 130, "nn tn nt tt", check}, {257, 96, 300, "nn tn nt tt", check},
    {512, 512, 512, "nn", bench},          {1024, 2304, 768, "nn", bench},
    {768, 3072, 1024, "tn", bench},        {1024, 768, 3072, "nt", bench},
};

// linear: x [n, ic] @ w [ic, oc] + b.
struct linear_case {
  int n, ic, oc;
  unsigned use;
};
inline constexpr linear_case linear_cases[] = {
    {1, 1, 1, check},    {3, 7, 5, check},     {5, 8, 9, check},
    {17, 33, 16, check}, {64, 130, 96, check}, {1024, 768, 3072, bench},
};

// Row-wise ops: layernorm / rmsnorm (n rows of c), swiglu (n rows, m = c outputs per row),
// softmax + cross-entropy and softmax_rows (n rows of vocab c).
struct rows_case {
  int n, c;
  unsigned use;
};
inline constexpr rows_case norm_cases[] = {
    {1, 1, check},     {2, 7, check},      {3, 8, check},       {3, 15, check},  {4, 16, check},
    {4, 17, check},    {2, 31, check},     {5, 33, check},      {2, 127, check}, {3, 768, check},
    {64, 1024, check}, {1024, 768, bench}, {1024, 4096, bench},
};
inline constexpr rows_case swiglu_cases[] = {
    {1, 1, check},  {2, 7, check},   {3, 8, check},    {2, 9, check},      {3, 16, check},
    {2, 17, check}, {4, 100, check}, {8, 1024, check}, {512, 8192, bench},
};
inline constexpr rows_case xent_cases[] = {
    {1, 1, check},  {2, 7, check},    {3, 16, check},    {2, 17, check},
    {4, 33, check}, {2, 1000, check}, {3, 50257, check}, {128, 50257, bench},
};

// Element-wise ops over n floats: gelu, add, accumulate, adamw, sum_squares.
struct elem_case {
  long n;
  unsigned use;
};
inline constexpr elem_case elem_cases[] = {
    {1, check},  {7, check},  {8, check},    {9, check},    {15, check},       {16, check},
    {17, check}, {33, check}, {1000, check}, {4097, check}, {1L << 22, bench},
};

// RoPE over n rows of n_head heads of head_dim, rows padded by `pad` untouched columns.
struct rope_case {
  int n, n_head, head_dim, pad;
  unsigned use;
};
inline constexpr rope_case rope_cases[] = {
    {1, 1, 2, 0, check},  {3, 2, 4, 3, check},    {5, 3, 10, 0, check},      {7, 4, 16, 5, check},
    {9, 2, 64, 1, check}, {17, 8, 128, 0, check}, {1024, 32, 128, 0, bench},
};

// Dense causal attention: tq query rows at offset, tk = offset + tq keys; n_kv_head 0 = n_head.
struct attention_case {
  int tq, offset, n_head, n_kv_head, head_dim;
  unsigned use;
};
inline constexpr attention_case attention_cases[] = {
    {1, 0, 1, 0, 1, check},      {3, 0, 2, 0, 4, check},      {7, 0, 2, 1, 8, check},
    {1, 37, 4, 2, 16, check},    {17, 5, 3, 3, 12, check},    {127, 0, 2, 2, 16, check},
    {128, 0, 2, 1, 8, check},    {129, 0, 2, 2, 8, check},    {257, 0, 1, 0, 32, check},
    {100, 150, 4, 2, 16, check}, {200, 56, 2, 1, 8, check},   {64, 0, 12, 0, 64, check},
    {256, 0, 12, 0, 64, bench},  {1024, 0, 12, 0, 64, bench}, {1, 1023, 12, 0, 64, bench},
};

// Paged attention: tq rows at positions start.. over start + tq cached rows in blocks of
// block_size (tq <= 4: the direct path, else gather + GEMMs).
struct paged_case {
  int tq, start, n_head, n_kv_head, head_dim, block_size;
  unsigned use;
};
inline constexpr paged_case paged_cases[] = {
    {1, 0, 1, 1, 1, 1, check},        {1, 37, 4, 2, 16, 4, check},
    {2, 5, 2, 1, 8, 3, check},        {4, 30, 8, 2, 64, 16, check},
    {5, 0, 2, 1, 8, 4, check},        {9, 0, 4, 2, 16, 4, check},
    {33, 17, 4, 1, 16, 8, check},     {150, 70, 2, 2, 32, 16, check},
    {1, 50, 4, 4, 12, 8, check},      {1, 2047, 32, 8, 128, 16, bench},
    {4, 2044, 32, 8, 128, 16, bench}, {256, 768, 32, 8, 128, 16, bench},
};

// Embedding: b x t ids into [vocab, c], positions pos0.. into [max_pos, c] when wpe.
struct embedding_case {
  int b, t, c, vocab, max_pos, pos0;
  bool wpe;
  unsigned use;
};
inline constexpr embedding_case embedding_cases[] = {
    {1, 1, 1, 1, 1, 0, true, check},
    {2, 3, 7, 11, 9, 2, true, check},
    {3, 5, 16, 13, 0, 0, false, check},
    {2, 17, 33, 50, 40, 3, true, check},
    {8, 1024, 768, 50257, 1024, 0, true, bench},
};

}  // namespace zf::test::shapes
