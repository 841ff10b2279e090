#!/usr/bin/env python3
"""PyTorch peer of bench_gpu (bench/gpu.cpp): the same ops at the same shapes on the same GPU,
timed the same way (CUDA events, median of repeats after two warm-ups). scripts/gpu-check runs
both in one call and prints ours/torch. Where PyTorch's op is not the same work, the comment says
how it differs. Last line: `torch key=value ...` with bench_gpu's keys.
Usage: python3 bench/gpu_torch_peer.py [--repeats N]"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, repeats):
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_torch_peer: no CUDA device")
        print("torch skipped=1")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # our fp32 GEMM is CUBLAS_COMPUTE_32F
    dev = "cuda"
    keys = {}

    def report(key, shape, ms, flops=0.0, nbytes=0.0):
        line = f"{key:22s} {shape:30s} {ms:10.3f} ms"
        if flops:
            keys[key + "_tflops"] = flops / ms / 1e9
            line += f" {flops / ms / 1e9:9.1f} TFLOP/s"
        if nbytes:
            keys[key + "_gbs"] = nbytes / ms / 1e6
            line += f" {nbytes / ms / 1e6:9.1f} GB/s"
        keys[key + "_ms"] = ms
        print(line, flush=True)

    r = args.repeats
    a = torch.empty(1 << 28, device=dev)
    b = torch.empty_like(a)
    report("copy", "1 GiB d2d", time_ms(lambda: b.copy_(a), r), nbytes=2.0 * a.numel() * 4)
    del a, b

    s = 8192
    a = torch.randn(s, s, device=dev, dtype=torch.bfloat16)
    b = torch.randn(s, s, device=dev, dtype=torch.bfloat16)
    # torch.matmul of bf16 returns bf16 (ours writes fp32 c): the output is 1/8 of the traffic.
    report("gemm_bf16", "8192^3 nn", time_ms(lambda: torch.matmul(a, b), r), flops=2.0 * s**3)
    del a, b
    s = 4096
    a = torch.randn(s, s, device=dev)
    b = torch.randn(s, s, device=dev)
    report("gemm_fp32", "4096^3 nn", time_ms(lambda: torch.matmul(a, b), r), flops=2.0 * s**3)
    del a, b

    n, ic, oc = 8192, 768, 3072
    x = torch.randn(n, ic, device=dev)
    w = torch.randn(oc, ic, device=dev) * 0.02
    bias = torch.zeros(oc, device=dev)
    report("linear_fwd", "8192x768 @ 768x3072", time_ms(lambda: F.linear(x, w, bias), r),
           flops=2.0 * n * ic * oc)

    x = torch.randn(8192, 768, device=dev)
    g = torch.ones(768, device=dev)
    beta = torch.zeros(768, device=dev)
    report("layernorm_fwd", "8192x768",
           time_ms(lambda: F.layer_norm(x, (768,), g, beta, 1e-5), r), nbytes=2.0 * x.numel() * 4)

    n, v = 8192, 50257
    logits = torch.randn(n, v, device=dev, requires_grad=True)
    targets = (torch.arange(n, device=dev) * 7919) % v

    def xent():  # forward + gradient (ours: one fused kernel, the gradient in place)
        loss = F.cross_entropy(logits, targets)
        (grad,) = torch.autograd.grad(loss, logits)
        return grad

    report("xent_fused", "8192x50257", time_ms(xent, r), nbytes=2.0 * n * v * 4)
    del logits

    x = torch.randn(8192 * 3072, device=dev)
    report("gelu_fwd", "8192x3072", time_ms(lambda: F.gelu(x, approximate="tanh"), r),
           nbytes=2.0 * x.numel() * 4)
    del x

    p = torch.zeros(124_000_000, device=dev, requires_grad=True)
    p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW([p], lr=3e-4, fused=True)
    report("adamw", "124M params", time_ms(opt.step, r), nbytes=7.0 * p.numel() * 4)
    del opt, p

    t, nh, hd = 1024, 12, 64
    q = torch.randn(1, nh, t, hd, device=dev)
    k = torch.randn_like(q)
    vv = torch.randn_like(q)
    # SDPA (flash / memory-efficient) keeps no probabilities; ours writes att [12, 1024, 1024].
    report("attention_fwd", "1024 pos, 12x64",
           time_ms(lambda: F.scaled_dot_product_attention(q, k, vv, is_causal=True), r),
           flops=2.0 * nh * t * t * hd)

    ctx, nh, nkv, hd = 4096, 32, 8, 128
    q = torch.randn(1, nh, 1, hd, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, nkv, ctx, hd, device=dev, dtype=torch.bfloat16)
    vv = torch.randn_like(k)
    # Contiguous K/V (ours reads a scrambled block table); bf16 output.
    report("paged_decode", "ctx 4096, 32q/8kv x128 bf16",
           time_ms(lambda: F.scaled_dot_product_attention(q, k, vv, enable_gqa=True), r),
           nbytes=2.0 * k.numel() * 2)

    print("torch " + " ".join(f"{key}={val:.4g}" for key, val in sorted(keys.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
