#!/usr/bin/python3
"""Interop check for `zeroflow ckpt export`: reads the exported safetensors file (by hand, with
struct + json) and the Hugging Face config.json beside it, runs the GPT-2 forward in torch (the
model of gen_golden.py) and prints the logits for fixed token ids as JSON on stdout:
    {"ids": [...], "logits": [[V floats] per position]}

    /usr/bin/python3 tests/golden/read_export.py FILE [--ids 3,1,4,1,5]

Needs Debian python3-torch (CPU); runs single-threaded and deterministic.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
          "F64": (torch.float64, 8)}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, size = DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dtype) if e > b else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).float()
    return out


# ---- the model of gen_golden.py ----------------------------------------------------------------
LN_EPS = 1e-5


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--ids", default="3,1,4,1,5,9,2,6")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(os.path.dirname(os.path.abspath(a.file)), "config.json")) as f:
        hf = json.load(f)
    assert hf["model_type"] == "gpt2" and hf["activation_function"] == "gelu_new", hf
    assert abs(hf["layer_norm_epsilon"] - LN_EPS) < 1e-12, hf
    cfg = {k: hf[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")}
    P = read_safetensors(a.file)
    ids = [int(t) for t in a.ids.split(",")]
    with torch.no_grad():
        logits = forward(P, torch.tensor([ids], dtype=torch.long), cfg)[0]
    json.dump({"ids": ids, "logits": logits.tolist()}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
