#!/usr/bin/python3
"""PyTorch twin of zeroflow's Llama training: writes tests/golden/llama_small_untied.safetensors and
tests/golden/llama_small_tied.safetensors, the golden files for the Llama model parity tests
(forward logits, loss, every gradient, and 10 AdamW training steps), in zeroflow's canonical layout.

Run (from anywhere; needs Debian python3-torch 1.13.1 CPU + python3-numpy, nothing else):
    /usr/bin/python3 tests/golden/gen_llama_golden.py            # (re)generate both files
    /usr/bin/python3 tests/golden/gen_llama_golden.py --check    # re-read them and re-run
Options: --out DIR (the folder of the two files; default: next to this script).
The output is deterministic (one thread, fixed seeds) and committed; tests read it, not torch.

Spec
----
Same file structure, training procedure and hyper-parameters as gpt_small.safetensors (see the
docstring of gen_golden.py, whose run_all / lr_at / AdamW / clipping / writer / checker this script
imports): fp32 throughout, input_ids I32 [steps, B, T+1]; logits [B, T, V] and loss [1] for batch 0
at the initial weights; every parameter's initial value under its name; grad.<name>; final.<name>
after `steps` AdamW steps (clip to grad_clip, warm-up + cosine lr, weight decay on dim >= 2 params
only); train_losses, train_grad_norms, train_lrs.

Config (stored in "__metadata__" as strings, read back by --check):
    arch=llama n_layer=2 n_head=4 n_kv_head=2 n_embd=32 head_dim=8 intermediate=48 vocab_size=96
    n_positions=32 norm_eps=1e-05 rope_theta=10000 rope_type=llama3 rope_factor=4
    rope_low_freq_factor=2 rope_high_freq_factor=16 rope_original_max_positions=128 tied=0|1
    B=2 T=16 steps=10 lr=0.01 warmup=3 min_lr_ratio=0.1 beta1=0.9 beta2=0.95 eps=1e-08
    weight_decay=0.1 grad_clip=1.0 seed=1234 (untied) | 1235 (tied)
    (plus format=pt, generator, torch_version).
RoPE bands (llama3 scaling, head_dim 8, theta 1e4): base inv_freq 1, 0.1, 0.01, 0.001 have
wavelengths 6.28, 62.8, 628, 6283; old / high = 8 and old / low = 64, so the first frequency is
kept, the second smoothed (-> 0.0251992) and the last two divided by 4 (checked when run).

Model: Hugging Face LlamaForCausalLM's math, no biases, no dropout. C = n_embd, H = n_head,
KV heads Hkv = n_kv_head, hd = head_dim, Q = H hd, K = Hkv hd, I = intermediate, V = vocab_size.
    x = embed_tokens[ids]
    per layer l:  h = RMSNorm(x; input_layernorm)       RMSNorm(x; w) = x rsqrt(mean(x^2) + eps) w
                  q, k, v = h @ qkv_proj [C, Q+2K], split at columns Q and Q+K;
                  head j of q (of k, v) = columns j hd .. (j+1) hd of its slice
                  q, k = rope(q), rope(k): t cos + rotate_half(t) sin, rotate_half(t) = [-t2, t1]
                  (t1, t2 the halves of a head); cos/sin = cos/sin(cat(a, a)) with angles
                  a[p, i] = p * inv_freq[i] computed in fp32 as HF does, inv_freq =
                  gen_hf.llama_inv_freq (transformers' llama3 formula, in float64) rounded to fp32
                  (HF computes inv_freq itself in fp32: it may differ by 1 ulp)
                  query head j attends with kv head j // (H / Hkv) (repeat_kv)
                  att = softmax(causal_mask(q k^T / sqrt(hd)))    masked entries -inf
                  x = x + (att v, heads concatenated) @ o_proj [Q, C]
                  h = RMSNorm(x; post_attention_layernorm)
                  g, u = h @ gate_up_proj [C, 2I], split at column I
                  x = x + (silu(g) * u) @ down_proj [I, C]
    logits = RMSNorm(x; norm) @ lm_head^T  (lm_head [V, C]; the tied file uses embed_tokens)
    loss = mean cross-entropy over all B*T tokens.
The canonical layout differs from HF's: matrices are [in, out] (y = x @ W) and fused:
qkv_proj = cat([q_proj, k_proj, v_proj], 0)^T, o_proj = o_proj^T, gate_up_proj =
cat([gate_proj, up_proj], 0)^T, down_proj = down_proj^T of HF's [out, in] weights; lm_head.weight
and embed_tokens.weight are as HF stores them. --check also runs gen_hf.llama_forward (float64, HF
layout) on the weights converted back to HF's names and compares its logits.

Initial weights (torch.manual_seed(seed), drawn in the parameter order below): matrices
(dim >= 2) ~ N(0, 0.1), except that the tied file's embed_tokens.weight ~ 0.3 N(0, 0.1)
(TIED_EMBED_SCALE: a tied head reads a token's own embedding back, so it is kept small, as gen_hf
does for tiny-llama31; initial logits std 0.17, max |logit| 0.56 against 0.57 / 1.95 unscaled);
RMSNorm weights ~ 1 + N(0, 0.1). Then input_ids = torch.randint(0, V, (steps, B, T+1)).

Parameter names, shapes and order (the order of the file and of zeroflow's flat buffer):
    embed_tokens.weight [V, C], then for l in 0..n_layer-1:
    layers.{l}.input_layernorm.weight [C], layers.{l}.self_attn.qkv_proj.weight [C, Q+2K],
    layers.{l}.self_attn.o_proj.weight [Q, C], layers.{l}.post_attention_layernorm.weight [C],
    layers.{l}.mlp.gate_up_proj.weight [C, 2I], layers.{l}.mlp.down_proj.weight [I, C],
    then norm.weight [C], and lm_head.weight [V, C] only in the untied file.
"""
import contextlib
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden  # noqa: E402
import gen_hf  # noqa: E402
from gen_golden import (config_metadata, max_diff, read_safetensors, verify_golden,  # noqa: E402
                        write_golden)
from gen_hf import causal_attention, llama_inv_freq, rms_norm, rotate_half  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_KEYS = ("B", "T", "steps", "lr", "warmup", "min_lr_ratio", "beta1", "beta2", "eps",
              "weight_decay", "grad_clip")
MODEL = dict(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, head_dim=8,
             intermediate=48, vocab_size=96, n_positions=32, norm_eps=1e-5, rope_theta=10000,
             rope_type="llama3", rope_factor=4, rope_low_freq_factor=2, rope_high_freq_factor=16,
             rope_original_max_positions=128)
TRAIN = {k: gen_golden.CONFIG[k] for k in TRAIN_KEYS}  # gpt_small's training hyper-parameters
CONFIGS = {  # file name -> config (metadata order)
    "llama_small_untied.safetensors": dict(MODEL, tied=0, **TRAIN, seed=1234),
    "llama_small_tied.safetensors": dict(MODEL, tied=1, **TRAIN, seed=1235),
}
TIED_EMBED_SCALE = 0.3


# ---------------------------------------------------------------------------------------------
# Model (canonical layout)


def param_specs(cfg):
    """[(name, shape)] in the canonical order."""
    C, V, I = cfg["n_embd"], cfg["vocab_size"], cfg["intermediate"]
    Q, K = cfg["n_head"] * cfg["head_dim"], cfg["n_kv_head"] * cfg["head_dim"]
    specs = [("embed_tokens.weight", (V, C))]
    for l in range(cfg["n_layer"]):
        p = f"layers.{l}."
        specs += [(p + "input_layernorm.weight", (C,)),
                  (p + "self_attn.qkv_proj.weight", (C, Q + 2 * K)),
                  (p + "self_attn.o_proj.weight", (Q, C)),
                  (p + "post_attention_layernorm.weight", (C,)),
                  (p + "mlp.gate_up_proj.weight", (C, 2 * I)),
                  (p + "mlp.down_proj.weight", (I, C))]
    specs.append(("norm.weight", (C,)))
    if not cfg["tied"]:
        specs.append(("lm_head.weight", (V, C)))
    return specs


def init_value(name, shape, r, cfg):
    """Initial value of one parameter from its draw r ~ N(0, 1)."""
    if len(shape) == 1:  # RMSNorm weights
        return 1.0 + r * 0.1
    if cfg["tied"] and name == "embed_tokens.weight":
        return r * 0.1 * TIED_EMBED_SCALE
    return r * 0.1


def init_params(cfg):
    """gen_golden's: seeds torch, draws the parameters in spec order, then input_ids."""
    return gen_golden.init_params(cfg, param_specs, init_value)


def rope_scaling(cfg):
    """The config's rope_scaling as transformers' config.json spells it (None: plain RoPE)."""
    if cfg["rope_type"] == "default":
        return None
    assert cfg["rope_type"] == "llama3", cfg["rope_type"]
    return {"rope_type": "llama3", "factor": float(cfg["rope_factor"]),
            "low_freq_factor": float(cfg["rope_low_freq_factor"]),
            "high_freq_factor": float(cfg["rope_high_freq_factor"]),
            "original_max_position_embeddings": int(cfg["rope_original_max_positions"])}


def rope_bands(cfg):
    """Per frequency: kept / smoothed / divided, from the wavelength against the llama3 limits."""
    rs = rope_scaling(cfg)
    base = llama_inv_freq(cfg["head_dim"], float(cfg["rope_theta"]))
    if rs is None:
        return ["kept"] * len(base)
    old = rs["original_max_position_embeddings"]
    out = []
    for w in (2 * math.pi / base).tolist():
        out.append("kept" if w < old / rs["high_freq_factor"] else
                   "divided" if w > old / rs["low_freq_factor"] else "smoothed")
    scaled = llama_inv_freq(cfg["head_dim"], float(cfg["rope_theta"]), rs)
    for b, r in zip(out, (base / scaled).tolist()):  # the frequency code agrees with the bands
        assert (b == "kept") == (r == 1.0) and (b == "divided") == (r == rs["factor"]), (b, r)
    return out


def rope_cos_sin(cfg, T):
    """cos, sin [T, hd] fp32: inv_freq rounded to fp32, angles and cos/sin in fp32 as HF does."""
    inv_freq = llama_inv_freq(cfg["head_dim"], float(cfg["rope_theta"]), rope_scaling(cfg)).float()
    angles = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def forward(P, idx, cfg):
    """idx: int64 [B, T] -> logits fp32 [B, T, V]; P in the canonical layout."""
    B, T = idx.shape
    nh, nkv, hd, I = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"], cfg["intermediate"]
    eps = cfg["norm_eps"]
    cos, sin = rope_cos_sin(cfg, T)

    def heads(t, n):  # [B, T, n hd] -> [B, n, T, hd]
        return t.view(B, T, n, hd).transpose(1, 2)

    x = F.embedding(idx, P["embed_tokens.weight"])
    for l in range(cfg["n_layer"]):
        p = f"layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ P[p + "self_attn.qkv_proj.weight"]).split([nh * hd, nkv * hd, nkv * hd], -1)
        q, k, v = heads(q, nh), heads(k, nkv), heads(v, nkv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)  # repeat_kv: query head j uses kv head j // g
        v = v.repeat_interleave(nh // nkv, dim=1)
        y = torch.stack([causal_attention(q[b], k[b], v[b]) for b in range(B)])  # [B, T, nh hd]
        x = x + y @ P[p + "self_attn.o_proj.weight"]
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        gate, up = (h @ P[p + "mlp.gate_up_proj.weight"]).split(I, dim=-1)
        x = x + (F.silu(gate) * up) @ P[p + "mlp.down_proj.weight"]
    head = P["embed_tokens.weight"] if cfg["tied"] else P["lm_head.weight"]
    return F.linear(rms_norm(x, P["norm.weight"], eps), head)


# ---------------------------------------------------------------------------------------------
# Layout conversion (HF LlamaForCausalLM names and [out, in] weights <-> canonical)


def hf_to_canonical(w, cfg):
    """w: HF names ("model." prefix) -> tensors; returns {canonical name: tensor} in spec order."""
    out = {}
    for name, shape in param_specs(cfg):
        if name == "lm_head.weight":
            t = w["lm_head.weight"]
        elif name.endswith("qkv_proj.weight"):
            p = "model." + name[:-len("qkv_proj.weight")]
            t = torch.cat([w[p + x + "_proj.weight"] for x in "qkv"], 0).T
        elif name.endswith("gate_up_proj.weight"):
            p = "model." + name[:-len("gate_up_proj.weight")]
            t = torch.cat([w[p + "gate_proj.weight"], w[p + "up_proj.weight"]], 0).T
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            t = w["model." + name].T
        else:
            t = w["model." + name]
        assert tuple(t.shape) == shape, (name, tuple(t.shape), shape)
        out[name] = t.contiguous()
    return out


def canonical_to_hf(P, cfg):
    """The inverse of hf_to_canonical."""
    Q, K = cfg["n_head"] * cfg["head_dim"], cfg["n_kv_head"] * cfg["head_dim"]
    w = {}
    for name, t in P.items():
        if name == "lm_head.weight":
            w[name] = t
        elif name.endswith("qkv_proj.weight"):
            p = "model." + name[:-len("qkv_proj.weight")]
            for x, part in zip("qkv", t.T.split([Q, K, K], 0)):
                w[p + x + "_proj.weight"] = part
        elif name.endswith("gate_up_proj.weight"):
            p = "model." + name[:-len("gate_up_proj.weight")]
            w[p + "gate_proj.weight"], w[p + "up_proj.weight"] = t.T.split(cfg["intermediate"], 0)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            w["model." + name] = t.T
        else:
            w["model." + name] = t
    return {k: v.contiguous() for k, v in w.items()}


@contextlib.contextmanager
def gen_hf_llama_config(cfg):
    """gen_hf.llama_forward reads its architecture from the module global LLAMA: point it at cfg."""
    assert cfg["n_head"] * cfg["head_dim"] == cfg["n_embd"], "gen_hf's twin has hd = C / H"
    saved = gen_hf.LLAMA
    gen_hf.LLAMA = dict(hidden=cfg["n_embd"], layers=cfg["n_layer"], heads=cfg["n_head"],
                        kv_heads=cfg["n_kv_head"], inter=cfg["intermediate"],
                        positions=cfg["n_positions"], theta=float(cfg["rope_theta"]),
                        eps=cfg["norm_eps"])
    try:
        yield
    finally:
        gen_hf.LLAMA = saved


def hf_reference_logits(P, idx, cfg):
    """gen_hf's float64 HF-layout twin on P (canonical), row by row of idx -> float64 [B, T, V]."""
    w = canonical_to_hf({n: t.detach() for n, t in P.items()}, cfg)
    with gen_hf_llama_config(cfg), torch.no_grad():
        rows = [gen_hf.llama_forward(w, row.tolist(), rope_scaling(cfg)) for row in idx]
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------


def metadata(cfg):
    md = config_metadata(cfg)
    del md["ln_eps"]  # gen_golden's GPT-2 LayerNorm eps; a Llama has norm_eps in its config
    md["generator"] = "tests/golden/gen_llama_golden.py"
    return md


def config_from_metadata(md, like):
    return {k: type(v)(md[k]) for k, v in like.items()}


def generate_one(path, cfg):
    bands = rope_bands(cfg)
    assert {"kept", "smoothed", "divided"} <= set(bands), bands
    init, ids = init_params(cfg)
    write_golden(path, cfg, init, ids, forward, metadata(cfg))
    with torch.no_grad():
        lg = forward(init, ids[0, :, :cfg["T"]].long(), cfg)
    print(f"  rope bands {bands}; logits std {float(lg.std()):.3f}, "
          f"max |logit| {float(lg.abs().max()):.3f}")


def check_one(path, cfg):
    meta, st = read_safetensors(path)
    got = config_from_metadata(meta, cfg)
    assert got == cfg, f"metadata config {got} != script config {cfg}"
    assert meta["generator"] == "tests/golden/gen_llama_golden.py" and meta["format"] == "pt"
    bands = rope_bands(cfg)
    assert {"kept", "smoothed", "divided"} <= set(bands), bands
    print(f"{os.path.basename(path)}: rope bands {bands}")
    verify_golden(st, cfg, param_specs(cfg), forward, init_params)
    # Independent layout check: the file's initial weights in HF's layout through gen_hf's
    # float64 twin give the stored (fp32) logits.
    P = {n: torch.from_numpy(st[n].copy()) for n, _ in param_specs(cfg)}
    back = hf_to_canonical(canonical_to_hf(P, cfg), cfg)
    assert list(back) == list(P) and all(torch.equal(P[n], t) for n, t in back.items())
    ref = hf_reference_logits(P, torch.from_numpy(st["input_ids"][0, :, :cfg["T"]].copy()), cfg)
    d = max_diff(ref.numpy(), st["logits"])
    print(f"gen_hf float64 HF-layout twin vs stored logits: max |diff| {d:.3g}")
    assert d <= 2e-5, "canonical twin and gen_hf's HF-layout twin disagree"
    print(f"check OK: {path}")


def generate(folder):
    for fname, cfg in CONFIGS.items():
        generate_one(os.path.join(folder, fname), cfg)


def check(folder):
    for fname, cfg in CONFIGS.items():
        check_one(os.path.join(folder, fname), cfg)


def main():
    return gen_golden.cli(__doc__, HERE, "folder of the two golden files", generate, check)


if __name__ == "__main__":
    sys.exit(main())
