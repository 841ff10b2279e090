#!/usr/bin/python3
"""PyTorch twin of zeroflow's random-LTD (random layerwise token dropping, arXiv 2211.11586) in the
model's train mode: writes tests/golden/ltd_small.safetensors, the golden file of
tests/runtime/test_random_ltd.cpp (loss and every gradient of a small GPT-2 and a small Llama
whose middle or edge layers see only some of each sequence's tokens).

Run (from anywhere; needs Debian python3-torch 1.13.1 CPU + python3-numpy, nothing else):
    /usr/bin/python3 tests/golden/gen_ltd_golden.py            # (re)generate the golden file
    /usr/bin/python3 tests/golden/gen_ltd_golden.py --check    # re-read it and re-run everything
Options: --out PATH (default: ltd_small.safetensors next to this script).
Deterministic (one thread, fixed seeds); the file is committed and tests read it, not torch.

Spec
----
Two models, each under its prefix P ("gpt2/" and "llama/"): the model math of gen_golden.py
(GPT-2, tied head, LayerNorm eps 1e-5, gelu_tanh) and gen_llama_golden.py (Llama: RMSNorm, GQA,
RoPE rotate_half, SwiGLU, untied head here, plain RoPE: rope_type none), fp32 throughout, with the
parameter names, orientation and order of those scripts (which this one imports), initial values
drawn as they draw them (torch.manual_seed(seed), parameters in order, then input_ids =
randint(0, V, (1, B, T+1))), then the kept positions (below) from the same generator.
    GPT-2: n_layer=3 n_head=2 n_embd=16 vocab_size=32 n_positions=16 B=2 T=8 keep=5 layers=0,2
           seed=4321
    Llama: n_layer=3 n_head=4 n_kv_head=2 n_embd=16 head_dim=4 intermediate=24 vocab_size=32
           n_positions=16 norm_eps=1e-5 rope_theta=10000 B=2 T=8 keep=3 layers=1,2 seed=4322
Inputs ids[0, :, :T], targets ids[0, :, 1:]; loss = mean cross-entropy over all B*T targets.

random-LTD: in each listed layer l (the i-th of the list) batch row r keeps the positions
kept[i, r, :] (keep of them, strictly increasing; each drawn as sort(randperm(T)[:keep])). With
idx = kept[i] ([B, keep]):
    xc = x[r, idx[r]] for each row r                             gather: [B, keep, C]
    yc = block_l(xc) with the block's usual math on keep tokens: causal attention among the kept
         tokens only (token j sees kept tokens 0..j), Llama's RoPE at the kept tokens' ORIGINAL
         positions idx (GPT-2's positions are in its embedding, before any block)
    x' = x with x'[r, idx[r]] = yc[r]                            scatter: dropped rows unchanged
Every other layer runs on all T tokens. Gradients flow through the gather and scatter (autograd);
a dropped row's gradient passes the layer unchanged.

File contents (safetensors, gen_golden.write_safetensors), per prefix P in the order:
    P input_ids  I32 [1, B, T+1]      P kept  I32 [len(layers), B, keep]
    P loss       F32 [1]              P <name>  every parameter (initial value)
    P grad.<name>  F32  d loss / d <name>
Metadata (strings): per model "P<key>" for its config keys above (layers as "0,2"), plus
format=pt, generator, torch_version.
Self-checks (generate and --check): with every layer listed, keep = T and kept = 0..T-1, the
twin's logits equal gen_golden.forward / gen_llama_golden.forward exactly.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden  # noqa: E402
import gen_llama_golden  # noqa: E402
from gen_golden import LN_EPS, conv1d, max_diff, read_safetensors, write_safetensors  # noqa: E402
from gen_hf import causal_attention, llama_inv_freq, rms_norm, rotate_half  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "ltd_small.safetensors")
MODELS = {
    "gpt2/": dict(arch="gpt2", n_layer=3, n_head=2, n_embd=16, vocab_size=32, n_positions=16,
                  B=2, T=8, keep=5, layers="0,2", seed=4321),
    "llama/": dict(arch="llama", n_layer=3, n_head=4, n_kv_head=2, n_embd=16, head_dim=4,
                   intermediate=24, vocab_size=32, n_positions=16, norm_eps=1e-5,
                   rope_theta=10000.0, rope_type="none", tied=0, B=2, T=8, keep=3,
                   layers="1,2", seed=4322),
}


def layers_of(cfg):
    return [int(x) for x in cfg["layers"].split(",")]


def specs_of(cfg):
    if cfg["arch"] == "gpt2":
        return gen_golden.param_specs(cfg)
    return gen_llama_golden.param_specs(cfg)


def value_fn(cfg):
    return gen_golden.init_value if cfg["arch"] == "gpt2" else gen_llama_golden.init_value


def init_all(cfg):
    """(params, ids [1, B, T+1] int32, kept [len(layers), B, keep] int32), all from the seed."""
    c = dict(cfg, steps=1)
    params, ids = gen_golden.init_params(c, lambda _: specs_of(cfg), value_fn(cfg))
    T, keep = cfg["T"], cfg["keep"]
    kept = torch.stack([torch.stack([torch.randperm(T)[:keep].sort().values
                                     for _ in range(cfg["B"])]) for _ in layers_of(cfg)])
    return params, ids, kept.to(torch.int32)


# ---------------------------------------------------------------------------------------------
# Blocks on a [B, k, C] batch at positions pos [B, k] (the same math as the twins' forwards)


def gpt2_block(P, x, pos, l, cfg):
    B, T, C = x.shape
    H = cfg["n_head"]
    hd = C // H
    h = f"h.{l}."
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    a = F.layer_norm(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], LN_EPS)
    qkv = conv1d(a, P[h + "attn.c_attn.weight"], P[h + "attn.c_attn.bias"])
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, H, hd).transpose(1, 2)
    k = k.view(B, T, H, hd).transpose(1, 2)
    v = v.view(B, T, H, hd).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
    x = x + conv1d(y, P[h + "attn.c_proj.weight"], P[h + "attn.c_proj.bias"])
    m = F.layer_norm(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], LN_EPS)
    m = F.gelu(conv1d(m, P[h + "mlp.c_fc.weight"], P[h + "mlp.c_fc.bias"]), approximate="tanh")
    return x + conv1d(m, P[h + "mlp.c_proj.weight"], P[h + "mlp.c_proj.bias"])


def rope_at(cfg, pos):
    """cos, sin [B, 1, k, hd] at positions pos [B, k]: fp32 angles, as gen_llama_golden does."""
    inv_freq = llama_inv_freq(cfg["head_dim"], float(cfg["rope_theta"])).float()
    angles = pos.to(torch.float32)[..., None] * inv_freq  # [B, k, hd/2]
    emb = torch.cat((angles, angles), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def llama_block(P, x, pos, l, cfg):
    B, T, _ = x.shape
    nh, nkv, hd, I = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"], cfg["intermediate"]
    eps = cfg["norm_eps"]
    cos, sin = rope_at(cfg, pos)

    def heads(t, n):  # [B, T, n hd] -> [B, n, T, hd]
        return t.view(B, T, n, hd).transpose(1, 2)

    p = f"layers.{l}."
    h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
    q, k, v = (h @ P[p + "self_attn.qkv_proj.weight"]).split([nh * hd, nkv * hd, nkv * hd], -1)
    q, k, v = heads(q, nh), heads(k, nkv), heads(v, nkv)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(nh // nkv, dim=1)
    v = v.repeat_interleave(nh // nkv, dim=1)
    y = torch.stack([causal_attention(q[b], k[b], v[b]) for b in range(B)])
    x = x + y @ P[p + "self_attn.o_proj.weight"]
    h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
    gate, up = (h @ P[p + "mlp.gate_up_proj.weight"]).split(I, dim=-1)
    return x + (F.silu(gate) * up) @ P[p + "mlp.down_proj.weight"]


def forward(P, idx, cfg, layers, kept):
    """idx [B, T] int64; layers: dropping layer ids; kept [len(layers), B, keep] -> logits."""
    B, T = idx.shape
    gpt2 = cfg["arch"] == "gpt2"
    block = gpt2_block if gpt2 else llama_block
    if gpt2:
        x = F.embedding(idx, P["wte.weight"]) + P["wpe.weight"][:T]
    else:
        x = F.embedding(idx, P["embed_tokens.weight"])
    all_pos = torch.arange(T).expand(B, T)
    for l in range(cfg["n_layer"]):
        if l not in layers:
            x = block(P, x, all_pos, l, cfg)
            continue
        pos = kept[layers.index(l)].long()  # [B, keep]
        gi = pos[..., None].expand(-1, -1, x.shape[-1])
        yc = block(P, torch.gather(x, 1, gi), pos, l, cfg)
        x = x.scatter(1, gi, yc)  # the dropped rows keep x
    if gpt2:
        x = F.layer_norm(x, (x.shape[-1],), P["ln_f.weight"], P["ln_f.bias"], LN_EPS)
        return F.linear(x, P["wte.weight"])
    return F.linear(rms_norm(x, P["norm.weight"], cfg["norm_eps"]), P["lm_head.weight"])


def reference_forward(P, idx, cfg):
    """The existing twin of this architecture (no dropping)."""
    if cfg["arch"] == "gpt2":
        return gen_golden.forward(P, idx, cfg)
    return gen_llama_golden.forward(P, idx, dict(cfg, rope_type="default"))


def self_check(cfg, init, ids):
    """All layers, keep = T, identity positions: exactly the existing twin's logits."""
    B, T = cfg["B"], cfg["T"]
    idx = ids[0, :, :T].long()
    full = torch.arange(T, dtype=torch.int32).expand(cfg["n_layer"], B, T)
    with torch.no_grad():
        ours = forward(init, idx, cfg, list(range(cfg["n_layer"])), full)
        ref = reference_forward(init, idx, cfg)
    d = max_diff(ours.numpy(), ref.numpy())
    assert d == 0.0, f"{cfg['arch']}: the full-keep twin differs from the plain twin by {d}"


def run(cfg, init, ids, kept):
    """{name: tensor}: loss and every gradient of the dropping model on batch 0."""
    T = cfg["T"]
    P = gen_golden.leaf_params(init)
    x, y = ids[0, :, :T].long(), ids[0, :, 1:].long()
    logits = forward(P, x, cfg, layers_of(cfg), kept)
    loss = gen_golden.loss_of(logits, y)
    loss.backward()
    out = {"loss": loss.detach().reshape(1)}
    for n in init:
        out["grad." + n] = P[n].grad.detach().clone()
    return out


def tensors_of(prefix, cfg, init, ids, kept):
    res = run(cfg, init, ids, kept)
    t = [(prefix + "input_ids", "I32", ids.numpy()), (prefix + "kept", "I32", kept.numpy()),
         (prefix + "loss", "F32", res["loss"].numpy())]
    t += [(prefix + n, "F32", v.numpy()) for n, v in init.items()]
    t += [(prefix + "grad." + n, "F32", res["grad." + n].numpy()) for n in init]
    return t


def metadata():
    md = {"format": "pt", "generator": "tests/golden/gen_ltd_golden.py",
          "torch_version": torch.__version__}
    for prefix, cfg in MODELS.items():
        for k, v in cfg.items():
            md[prefix + k] = repr(v) if isinstance(v, float) else str(v)
    return md


def generate(path):
    tensors = []
    for prefix, cfg in MODELS.items():
        init, ids, kept = init_all(cfg)
        self_check(cfg, init, ids)
        tensors += tensors_of(prefix, cfg, init, ids, kept)
    write_safetensors(path, tensors, metadata())
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def check(path):
    meta, st = read_safetensors(path)
    assert meta == {**metadata(), "torch_version": meta["torch_version"]}, "metadata differs"
    expected = []
    for prefix, cfg in MODELS.items():
        init, ids, kept = init_all(cfg)
        self_check(cfg, init, ids)
        # The seed reproduces the stored weights, ids and kept positions; the loss and gradients
        # re-run from the file's own tensors.
        assert np.array_equal(ids.numpy(), st[prefix + "input_ids"]), prefix + "input_ids"
        assert np.array_equal(kept.numpy(), st[prefix + "kept"]), prefix + "kept"
        for n in init:
            assert np.array_equal(init[n].numpy(), st[prefix + n]), prefix + n
        file_init = {n: torch.from_numpy(st[prefix + n].copy()) for n in init}
        for name, _, a in tensors_of(prefix, cfg, file_init,
                                     torch.from_numpy(st[prefix + "input_ids"].copy()),
                                     torch.from_numpy(st[prefix + "kept"].copy())):
            ref = st[name]
            assert a.shape == ref.shape and a.dtype == ref.dtype, name
            scale = max(1.0, float(np.max(np.abs(ref))))
            assert max_diff(a, ref) <= 1e-6 * scale, f"{name} differs"
            expected.append(name)
    assert list(st) == expected, "tensor set/order differs from the spec"
    print(f"check OK: {path}")


def main():
    return gen_golden.cli(__doc__, DEFAULT_OUT, "golden file path", generate, check)


if __name__ == "__main__":
    sys.exit(main())
