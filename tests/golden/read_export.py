#!/usr/bin/python3
"""Interop check for `zeroflow ckpt export`: reads the exported safetensors file (by hand, with
struct + json) and the Hugging Face config.json beside it, runs the GPT-2 forward in torch (the
model of gen_golden.py) or, for model_type llama, the Llama twin of gen_llama_golden.py on the
Hugging Face tensors mapped back to its layout (gen_finetune_golden.llama_model), and prints the
logits for fixed token ids as JSON on stdout:
    {"ids": [...], "logits": [[V floats] per position]}

    /usr/bin/python3 tests/golden/read_export.py FILE [--ids 3,1,4,1,5]

Needs Debian python3-torch (CPU); runs single-threaded and deterministic.
"""
import argparse
import json
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


# The model is the twin's own (one definition of the reference forward).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import LN_EPS, forward  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--ids", default="3,1,4,1,5,9,2,6")
    a = ap.parse_args()
    torch.set_num_threads(1)
    folder = os.path.dirname(os.path.abspath(a.file))
    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    ids = [int(t) for t in a.ids.split(",")]
    if hf["model_type"] == "llama":
        from gen_finetune_golden import llama_model  # noqa: E402
        assert os.path.basename(a.file) == "model.safetensors", a.file
        cfg, params, fwd = llama_model(folder)
        with torch.no_grad():
            logits = fwd(params, torch.tensor([ids], dtype=torch.long), cfg)[0]
        json.dump({"ids": ids, "logits": logits.tolist()}, sys.stdout)
        sys.stdout.write("\n")
        return
    assert hf["model_type"] == "gpt2" and hf["activation_function"] == "gelu_new", hf
    assert abs(hf["layer_norm_epsilon"] - LN_EPS) < 1e-12, hf
    cfg = {k: hf[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")}
    P = read_safetensors(a.file)
    with torch.no_grad():
        logits = forward(P, torch.tensor([ids], dtype=torch.long), cfg)[0]
    json.dump({"ids": ids, "logits": logits.tolist()}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
