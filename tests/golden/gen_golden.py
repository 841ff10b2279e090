#!/usr/bin/python3
"""PyTorch twin of zeroflow's GPT-2: writes tests/golden/gpt_small.safetensors, the golden file for
the model parity tests (forward logits, loss, every gradient, and 10 AdamW training steps).

Run (from anywhere; needs Debian python3-torch 1.13.1 CPU + python3-numpy, nothing else):
    /usr/bin/python3 tests/golden/gen_golden.py            # (re)generate the golden file
    /usr/bin/python3 tests/golden/gen_golden.py --check    # re-read it with the reader below and
                                                           # re-run everything against it
Options: --out PATH (default: gpt_small.safetensors next to this script).
The output is deterministic (one thread, fixed seed) and committed; tests read it, not torch.

Spec
----
Config (stored in "__metadata__" as strings, read back by --check):
    n_layer=2 n_head=2 n_embd=32 vocab_size=96 n_positions=32 B=2 T=16 steps=10 lr=0.01 warmup=3
    min_lr_ratio=0.1 beta1=0.9 beta2=0.95 eps=1e-08 weight_decay=0.1 grad_clip=1.0 seed=1234
    (plus ln_eps=1e-05, format=pt, generator, torch_version).

Model: GPT-2, fp32 throughout (no float64 anywhere), no dropout. C = n_embd, H = n_head,
hd = C / H, V = vocab_size, P = n_positions.
    x = wte[ids] + wpe[0..T)
    per block i:  a = LN(x; ln_1)                                 LayerNorm eps 1e-5
                  qkv = a @ attn.c_attn.weight [C,3C] + bias       Conv1D: weight is [in, out]
                  q, k, v = qkv[..., 0:C], qkv[..., C:2C], qkv[..., 2C:3C]
                  head h of q/k/v = columns h*hd .. (h+1)*hd of that slice
                  att = softmax(causal_mask(q k^T / sqrt(hd)))     masked entries -inf
                  x = x + (att v, heads concatenated) @ attn.c_proj.weight [C,C] + bias
                  m = LN(x; ln_2) @ mlp.c_fc.weight [C,4C] + bias
                  x = x + gelu_tanh(m) @ mlp.c_proj.weight [4C,C] + bias
                  gelu_tanh(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))
    logits = LN(x; ln_f) @ wte^T                                   tied head, no bias
    loss = mean cross-entropy over all B*T tokens.

Initial weights (torch.manual_seed(seed), then drawn in the parameter order listed below):
    matrices (dim >= 2: wte, wpe, all Conv1D weights) ~ N(0, 0.1); biases ~ N(0, 0.05);
    LayerNorm weights ~ 1 + N(0, 0.1); LayerNorm biases ~ N(0, 0.05).
Then input_ids = torch.randint(0, V, (steps, B, T+1)) from the same generator.
Batch s: inputs ids[s, :, :T], targets ids[s, :, 1:].

Training: `steps` steps from the initial weights, step s (0-based) on batch s:
    loss (recorded before the update), backward;
    clip (torch.nn.utils.clip_grad_norm_): n = sqrt(sum over all grads of g^2),
        coef = min(1, grad_clip / (n + 1e-6)), every grad *= coef (also when coef == 1);
    lr_s = lr (s+1)/warmup                          if s < warmup
         = lr_min + 0.5 (lr - lr_min)(1 + cos(pi (s - warmup) / max(1, steps - warmup)))
           with lr_min = lr * min_lr_ratio           otherwise          (computed in double)
    torch.optim.AdamW(betas=(beta1, beta2), eps, foreach=False), two groups: weight_decay on
    every parameter with dim >= 2 (wte, wpe, matrix weights), 0 on biases and LayerNorm params.
    torch 1.13's update, per parameter p with grad g, step t = 1, 2, ...:
        p *= 1 - lr_s * wd
        m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
        p -= (lr_s / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    then grads are zeroed.

File contents (safetensors, written by hand: 8-byte LE header length, compact JSON header padded
with spaces to a multiple of 8, raw little-endian data, tensors contiguous in the order below;
all F32 except input_ids):
    input_ids           I32 [steps, B, T+1]
    logits              F32 [B, T, V]   batch 0, initial weights
    loss                F32 [1]         batch 0, initial weights
    <name>              F32             initial value of every parameter
    grad.<name>         F32             d loss / d <name> for batch 0 at the initial weights
    final.<name>        F32             every parameter after `steps` training steps
    train_losses        F32 [steps]     loss of step s (train_losses[0] == loss)
    train_grad_norms    F32 [steps]     diagnostic: total grad norm n of step s, before clipping
    train_lrs           F32 [steps]     diagnostic: lr_s
Parameter names are Hugging Face GPT-2's without the "transformer." prefix, weights in the Conv1D
[in, out] orientation, in this order:
    wte.weight [V,C], wpe.weight [P,C], then for i in 0..n_layer-1:
    h.{i}.ln_1.weight [C], h.{i}.ln_1.bias [C], h.{i}.attn.c_attn.weight [C,3C],
    h.{i}.attn.c_attn.bias [3C], h.{i}.attn.c_proj.weight [C,C], h.{i}.attn.c_proj.bias [C],
    h.{i}.ln_2.weight [C], h.{i}.ln_2.bias [C], h.{i}.mlp.c_fc.weight [C,4C],
    h.{i}.mlp.c_fc.bias [4C], h.{i}.mlp.c_proj.weight [4C,C], h.{i}.mlp.c_proj.bias [C],
    then ln_f.weight [C], ln_f.bias [C].
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

CONFIG = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=96, n_positions=32, B=2, T=16, steps=10,
              lr=1e-2, warmup=3, min_lr_ratio=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
              weight_decay=0.1, grad_clip=1.0, seed=1234)
INT_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "B", "T", "steps",
            "warmup", "seed")
LN_EPS = 1e-5
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt_small.safetensors")


# ---------------------------------------------------------------------------------------------
# Model


def param_specs(cfg):
    """[(name, shape)] in the canonical order."""
    L, C, V, P = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    specs = [("wte.weight", (V, C)), ("wpe.weight", (P, C))]
    for i in range(L):
        h = f"h.{i}."
        specs += [
            (h + "ln_1.weight", (C,)), (h + "ln_1.bias", (C,)),
            (h + "attn.c_attn.weight", (C, 3 * C)), (h + "attn.c_attn.bias", (3 * C,)),
            (h + "attn.c_proj.weight", (C, C)), (h + "attn.c_proj.bias", (C,)),
            (h + "ln_2.weight", (C,)), (h + "ln_2.bias", (C,)),
            (h + "mlp.c_fc.weight", (C, 4 * C)), (h + "mlp.c_fc.bias", (4 * C,)),
            (h + "mlp.c_proj.weight", (4 * C, C)), (h + "mlp.c_proj.bias", (C,)),
        ]
    specs += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return specs


def is_layernorm(name):
    return ".ln_" in name or name.startswith("ln_f.")


def init_value(name, shape, r, cfg):
    """GPT-2's initial value of one parameter from its draw r ~ N(0, 1)."""
    if len(shape) >= 2:
        return r * 0.1
    if is_layernorm(name) and name.endswith(".weight"):
        return 1.0 + r * 0.1
    return r * 0.05  # Conv1D and LayerNorm biases


def init_params(cfg, specs_fn=param_specs, value_fn=init_value):
    """Seeds torch, draws the parameters, then input_ids, all from the default generator.
    Parameters in specs_fn(cfg)'s order, each value_fn(name, shape, r, cfg) of r ~ N(0, 1)."""
    torch.manual_seed(cfg["seed"])
    params = {}
    for name, shape in specs_fn(cfg):
        r = torch.randn(shape, dtype=torch.float32)
        params[name] = value_fn(name, shape, r, cfg).contiguous()
    ids = torch.randint(0, cfg["vocab_size"], (cfg["steps"], cfg["B"], cfg["T"] + 1))
    return params, ids.to(torch.int32)


def conv1d(x, w, b):
    """Hugging Face Conv1D: x @ w + b with w stored [in, out]."""
    out_shape = x.shape[:-1] + (w.shape[1],)
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(out_shape)


def forward(P, idx, cfg):
    """idx: int64 [B, T] -> logits fp32 [B, T, V]."""
    B, T = idx.shape
    C, H = cfg["n_embd"], cfg["n_head"]
    hd = C // H
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = F.embedding(idx, P["wte.weight"]) + P["wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        h = f"h.{i}."
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
        x = x + conv1d(m, P[h + "mlp.c_proj.weight"], P[h + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], LN_EPS)
    return F.linear(x, P["wte.weight"])  # tied head


def batch(ids, s, T):
    return ids[s, :, :T].long().contiguous(), ids[s, :, 1:].long().contiguous()


def loss_of(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lr_at(s, cfg):
    lr, warmup, steps = cfg["lr"], cfg["warmup"], cfg["steps"]
    if s < warmup:
        return lr * (s + 1) / warmup
    lr_min = lr * cfg["min_lr_ratio"]
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))


def leaf_params(init):
    return {n: t.detach().clone().requires_grad_(True) for n, t in init.items()}


def run_all(cfg, init, ids, fwd=forward):
    """Everything the golden file records, as {name: tensor} in file order (except input_ids).
    fwd(P, idx, cfg) -> logits is the model (this file's GPT-2 unless another twin passes one)."""
    T = cfg["T"]
    out = {}
    # Batch 0 at the initial weights: logits, loss, gradients.
    P = leaf_params(init)
    x, y = batch(ids, 0, T)
    logits = fwd(P, x, cfg)
    loss = loss_of(logits, y)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    for n in init:
        out[n] = init[n]
    for n in init:
        out["grad." + n] = P[n].grad.detach().clone()

    # Training from the same initial weights.
    P = leaf_params(init)
    decay = [p for p in P.values() if p.dim() >= 2]
    no_decay = [p for p in P.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                            foreach=False)
    losses, norms, lrs = [], [], []
    for s in range(cfg["steps"]):
        x, y = batch(ids, s, T)
        loss = loss_of(fwd(P, x, cfg), y)
        losses.append(loss.detach().reshape(1))
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(list(P.values()), cfg["grad_clip"]).detach()
                     .reshape(1).float())
        lr_s = lr_at(s, cfg)
        lrs.append(lr_s)
        for g in opt.param_groups:
            g["lr"] = lr_s
        opt.step()
        opt.zero_grad(set_to_none=True)
    for n in init:
        out["final." + n] = P[n].detach().clone()
    out["train_losses"] = torch.cat(losses)
    out["train_grad_norms"] = torch.cat(norms)
    out["train_lrs"] = torch.tensor(lrs, dtype=torch.float32)
    return out


# ---------------------------------------------------------------------------------------------
# safetensors by hand

DTYPES = {"F32": ("<f4", 4), "I32": ("<i4", 4), "F16": ("<f2", 2), "I64": ("<i8", 8),
          "F64": ("<f8", 8), "U8": ("u1", 1), "BF16": (None, 2)}


def write_safetensors(path, tensors, metadata):
    """tensors: [(name, dtype, numpy array)], written contiguously in that order."""
    header = {"__metadata__": dict(metadata)}
    blobs, off = [], 0
    for name, dtype, arr in tensors:
        b = np.ascontiguousarray(arr).astype(DTYPES[dtype][0], copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_safetensors(path):
    """Own reader with layout checks -> (metadata, {name: numpy array}) in file order."""
    with open(path, "rb") as f:
        raw = f.read()
    assert len(raw) >= 8, "truncated"
    (n,) = struct.unpack("<Q", raw[:8])
    assert 0 < n <= len(raw) - 8, f"bad header length {n}"
    assert n % 8 == 0, "header not padded to 8 bytes"
    hb = raw[8:8 + n]
    assert hb[:1] == b"{", "header does not start with '{'"
    header = json.loads(hb.decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out, expect = {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        np_dtype, size = DTYPES[e["dtype"]]
        assert b == expect, f"{name}: hole or overlap at {b} (expected {expect})"
        assert end - b == size * int(np.prod(e["shape"], dtype=np.int64)), f"{name}: span"
        assert end <= len(data), f"{name}: out of range"
        out[name] = np.frombuffer(data[b:end], dtype=np_dtype).reshape(e["shape"])
        expect = end
    assert expect == len(data), "trailing bytes after the last tensor"
    return meta, out


def config_metadata(cfg):
    md = {k: repr(v) if isinstance(v, float) else str(v) for k, v in cfg.items()}
    md.update(ln_eps=repr(LN_EPS), format="pt", generator="tests/golden/gen_golden.py",
              torch_version=torch.__version__)
    return md


def config_from_metadata(md):
    return {k: int(md[k]) if k in INT_KEYS else float(md[k]) for k in CONFIG}


# ---------------------------------------------------------------------------------------------


def generate(path):
    cfg = dict(CONFIG)
    init, ids = init_params(cfg)
    write_golden(path, cfg, init, ids, forward, config_metadata(cfg))


def write_golden(path, cfg, init, ids, fwd, metadata):
    """Runs everything from (init, ids) with model fwd and writes the file in the spec's order."""
    res = run_all(cfg, init, ids, fwd)
    tensors = [("input_ids", "I32", ids.numpy())]
    tensors += [(n, "F32", t.numpy()) for n, t in res.items()]
    for _, dtype, a in tensors:
        assert a.dtype == (np.int32 if dtype == "I32" else np.float32)
    write_safetensors(path, tensors, metadata)
    tl = res["train_losses"]
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors); "
          f"loss {res['loss'].item():.6f}, train_losses {tl[0].item():.4f} -> {tl[-1].item():.4f}")


def max_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def check(path):
    meta, st = read_safetensors(path)
    cfg = config_from_metadata(meta)
    assert cfg == CONFIG, f"metadata config {cfg} != script config {CONFIG}"
    assert float(meta["ln_eps"]) == LN_EPS
    verify_golden(st, cfg, param_specs(cfg), forward, init_params)
    print(f"check OK: {path}")


def verify_golden(st, cfg, specs, fwd, init_fn):
    """Checks a read golden file st against a re-run: layout, forward, gradients, training, seed.
    specs: [(name, shape)] in file order; fwd(P, idx, cfg) -> logits;
    init_fn(cfg) -> (init, ids)."""
    names = [n for n, _ in specs]
    expected = (["input_ids", "logits", "loss"] + names + ["grad." + n for n in names]
                + ["final." + n for n in names] + ["train_losses", "train_grad_norms", "train_lrs"])
    assert list(st) == expected, "tensor set/order differs from the spec"
    for n, shape in specs:
        for p in ("", "grad.", "final."):
            assert st[p + n].shape == shape and st[p + n].dtype == np.float32, p + n
    ids = torch.from_numpy(st["input_ids"].copy())
    assert ids.shape == (cfg["steps"], cfg["B"], cfg["T"] + 1)
    assert int(ids.min()) >= 0 and int(ids.max()) < cfg["vocab_size"]

    # Forward from the weights in the file (not from the seed): logits and loss must match.
    init = {n: torch.from_numpy(st[n].copy()) for n in names}
    P = leaf_params(init)
    x, y = batch(ids, 0, cfg["T"])
    logits = fwd(P, x, cfg)
    d = max_diff(logits.detach().numpy(), st["logits"])
    print(f"logits: max |diff| {d:.3g}")
    assert d <= 1e-6, "logits differ"
    assert abs(loss_of(logits, y).item() - float(st["loss"][0])) <= 1e-6, "loss differs"

    # The rest (gradients, training) re-run from the file's weights and ids.
    res = run_all(cfg, init, ids, fwd)
    worst = 0.0
    for n, t in res.items():
        ref = st[n]
        d = max_diff(t.numpy(), ref)
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        worst = max(worst, d / scale)
        assert d <= 1e-5 * scale, f"{n}: max |diff| {d}"
    print(f"grads, training, final weights: max scaled |diff| {worst:.3g}")

    # The seed reproduces the stored weights and ids exactly (determinism).
    init2, ids2 = init_fn(cfg)
    assert all(np.array_equal(init2[n].numpy(), st[n]) for n in names), "init not reproducible"
    assert np.array_equal(ids2.numpy(), st["input_ids"]), "input_ids not reproducible"


def main():
    return cli(__doc__, DEFAULT_OUT, "golden file path", generate, check)


def cli(doc, default_out, out_help, generate_fn, check_fn):
    """The command line of a twin script: [--out PATH] [--check], one thread, deterministic."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=default_out, help=out_help)
    ap.add_argument("--check", action="store_true", help="verify an existing file instead of writing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.check:
        check_fn(args.out)
    else:
        generate_fn(args.out)


if __name__ == "__main__":
    sys.exit(main())
