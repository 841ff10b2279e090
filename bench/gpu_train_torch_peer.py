#!/usr/bin/env python3
"""PyTorch peer of bench_train_step --device cuda: one GPT-2 124M training step (zero_grad,
forward, cross-entropy, backward, AdamW) at the same shape (B=4, T=256, vocab 50257, tied head)
on the same GPU, timed the same way (wall clock around the step, the GPU waited for; median of
--iters after --warmup). What a PyTorch user writes: bf16 autocast with fp32 master weights,
F.scaled_dot_product_attention (flash attention; zeroflow's attention keeps its probabilities),
torch.optim.AdamW(fused=True). scripts/gpu-check prints ours/torch.
Last line: `torch_train precision=... step_ms=... tokens_per_s=...`.
Usage: python3 bench/gpu_train_torch_peer.py [--precision bf16|f32] [--iters N] [--warmup N]"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.down = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.down(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L=12, H=12, C=768, V=50257, P=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
        self.blocks = nn.ModuleList(Block(C, H) for _ in range(L))
        self.lnf = nn.LayerNorm(C)

    def forward(self, ids, targets):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.t()  # the tied head
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_train skipped=1")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # ours: CUBLAS_COMPUTE_32F in fp32
    torch.manual_seed(0)
    B, T, V = 4, 256, 50257
    model = GPT(V=V).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, fused=True)
    data = torch.randint(0, V, (a.warmup + a.iters, B, T + 1), device="cuda")
    times = []
    for i in range(a.warmup + a.iters):
        ids, tg = data[i, :, :T].contiguous(), data[i, :, 1:].contiguous()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = model(ids, tg)
        loss.backward()
        opt.step()
        loss.item()
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    ms = times[len(times) // 2]
    print(f"torch_train precision={a.precision} step_ms={ms:.3f} tokens_per_s={B * T / ms * 1000:.0f}"
          f" loss_last={loss.item():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
