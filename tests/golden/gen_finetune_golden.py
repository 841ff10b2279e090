#!/usr/bin/python3
"""PyTorch fine-tuning twin for the Hugging Face fixtures tests/golden/hf/tiny-gpt2 and
tests/golden/hf/tiny-llama: writes tests/golden/hf/finetune.safetensors.

Run (from anywhere; needs Debian python3-torch 1.13.1 CPU + python3-numpy, nothing else):
    /usr/bin/python3 tests/golden/gen_finetune_golden.py            # (re)generate the file
    /usr/bin/python3 tests/golden/gen_finetune_golden.py --check    # re-read it and re-run
Options: --out PATH (default: hf/finetune.safetensors next to this script).
The output is deterministic (one thread, fixed seeds); the fixtures are read, never written.

Spec
----
Each model m in (gpt2, llama) starts from its fixture's model.safetensors (tiny-llama's BF16
weights upcast to fp32 exactly) in zeroflow's canonical names and layout, and is trained in fp32
(no float64 anywhere) with exactly gen_golden.py's procedure (its run_all: AdamW with weight
decay on dim >= 2 params only, clipping, warm-up + cosine lr) and its CONFIG's hyper-parameters:
    B=2 T=16 steps=10 lr=0.01 warmup=3 min_lr_ratio=0.1 beta1=0.9 beta2=0.95 eps=1e-08
    weight_decay=0.1 grad_clip=1.0
Every parameter is trained, also rows no batch reaches (wpe rows >= T, embedding rows of unseen
ids: zero gradient, so only weight decay moves them).
    gpt2: gen_golden.forward (GPT-2, LayerNorm eps 1e-5, gelu_new, tied head) with the fixture's
          n_layer / n_head / n_embd; canonical names = HF's without "transformer.", Conv1D weights
          [in, out] as stored, the attn.bias / attn.masked_bias buffers dropped; order as
          gen_golden.param_specs (wpe has the fixture's n_positions = 128 rows).
    llama: gen_llama_golden.forward with the fixture's config.json (rope_scaling null: plain
          RoPE, theta 1e4; rms_norm_eps 1e-5; untied); canonical layout and order as
          gen_llama_golden.param_specs (fused qkv_proj / gate_up_proj, [in, out] matrices,
          lm_head.weight last); the rotary_emb.inv_freq buffers dropped.
Before training, the fp32 twins are checked against the fixtures' own float64 golden
(hf/golden.safetensors: gpt2.p*, llama.p*, and llama31.p* for the tied llama3-rope case).

File contents (gen_golden's writer; metadata: the hyper-parameters above, m.seed, m.fixture,
m.vocab_size, precision=fp32, format, generator, torch_version), for m = gpt2 then llama:
    m.ids               I32 [steps, B, T+1]  torch.randint(0, V, ..., generator seeded m.seed);
                                             batch s: inputs ids[s, :, :T], targets ids[s, :, 1:]
    m.logits0           F32 [B, T, V]        batch 0, fixture weights
    m.train_losses      F32 [steps]          loss of step s before its update
    m.train_grad_norms  F32 [steps]          diagnostic: total grad norm before clipping
    m.final.<name>      F32                  every parameter after `steps` steps, canonical order
    m.final_logits      F32 [B, T, V]        batch 0 under the final weights
Caveat (as in test_model.cpp): GPT-2's key bias, columns [C, 2C) of h.*.attn.c_attn.bias, has an
exactly-zero gradient in exact arithmetic, so Adam turns rounding noise into full-size steps and
gpt2.final.h.*.attn.c_attn.bias[C:2C] is not reproducible across machines or implementations;
--check leaves it out (the logits do not depend on it).
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden  # noqa: E402
import gen_llama_golden as llama_twin  # noqa: E402
from gen_golden import (LN_EPS, batch, max_diff, read_safetensors, run_all,  # noqa: E402
                        write_safetensors)

HERE = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(HERE, "hf")
DEFAULT_OUT = os.path.join(HF, "finetune.safetensors")
TRAIN = {k: gen_golden.CONFIG[k] for k in llama_twin.TRAIN_KEYS}
MODELS = {"gpt2": dict(fixture="tiny-gpt2", seed=1), "llama": dict(fixture="tiny-llama", seed=2)}
TWIN_TOL = 1e-4  # fp32 twin vs the fixtures' float64 golden (max |diff| of logits)


# ---------------------------------------------------------------------------------------------
# Fixtures -> (cfg, canonical params, forward)


def load_safetensors_f32(path):
    """{name: fp32 tensor} of a fixture's model.safetensors; BF16 upcast exactly (bf16 bits are
    the top half of the fp32 bits). Only F32 and BF16 occur in the fixtures."""
    assert sys.byteorder == "little"
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    entries = json.loads(raw[8:8 + n])
    entries.pop("__metadata__", None)
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16}
    out = {}
    for name, e in entries.items():
        lo, hi = e["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + lo:8 + n + hi]), dtype=dtypes[e["dtype"]])
        out[name] = t.float().reshape(e["shape"])
    return out


def gpt2_model(fixture):
    d = os.path.join(HF, fixture)
    with open(os.path.join(d, "config.json")) as f:
        hc = json.load(f)
    assert hc["model_type"] == "gpt2" and hc["activation_function"] == "gelu_new"
    assert hc["layer_norm_epsilon"] == LN_EPS and hc.get("n_inner") is None
    cfg = dict(n_layer=hc["n_layer"], n_head=hc["n_head"], n_embd=hc["n_embd"],
               vocab_size=hc["vocab_size"], n_positions=hc["n_positions"], **TRAIN)
    w = load_safetensors_f32(os.path.join(d, "model.safetensors"))
    w = {k[len("transformer."):]: v for k, v in w.items()
         if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # old causal-mask buffers
    specs = gen_golden.param_specs(cfg)
    assert set(w) == {n for n, _ in specs}, set(w) ^ {n for n, _ in specs}
    params = {}
    for n, shape in specs:
        assert tuple(w[n].shape) == shape, (n, tuple(w[n].shape), shape)
        params[n] = w[n].contiguous()
    return cfg, params, gen_golden.forward


def llama_model(fixture):
    d = os.path.join(HF, fixture)
    with open(os.path.join(d, "config.json")) as f:
        hc = json.load(f)
    assert hc["model_type"] == "llama" and hc["hidden_act"] == "silu"
    assert not hc.get("attention_bias") and not hc.get("mlp_bias")
    cfg = dict(arch="llama", n_layer=hc["num_hidden_layers"], n_head=hc["num_attention_heads"],
               n_kv_head=hc["num_key_value_heads"], n_embd=hc["hidden_size"],
               head_dim=hc.get("head_dim") or hc["hidden_size"] // hc["num_attention_heads"],
               intermediate=hc["intermediate_size"], vocab_size=hc["vocab_size"],
               n_positions=hc["max_position_embeddings"], norm_eps=hc["rms_norm_eps"],
               rope_theta=hc["rope_theta"], rope_type="default",
               tied=int(bool(hc.get("tie_word_embeddings"))), **TRAIN)
    rs = hc.get("rope_scaling")
    if rs:
        cfg.update(rope_type=rs["rope_type"], rope_factor=rs["factor"],
                   rope_low_freq_factor=rs["low_freq_factor"],
                   rope_high_freq_factor=rs["high_freq_factor"],
                   rope_original_max_positions=rs["original_max_position_embeddings"])
        assert llama_twin.rope_scaling(cfg) == rs
    w = load_safetensors_f32(os.path.join(d, "model.safetensors"))
    params = llama_twin.hf_to_canonical(w, cfg)
    used = set(llama_twin.canonical_to_hf(params, cfg))
    assert all(k.endswith(".rotary_emb.inv_freq") for k in set(w) - used), set(w) - used
    return cfg, params, llama_twin.forward


LOADERS = {"gpt2": gpt2_model, "llama": llama_model}


def check_twins():
    """The fp32 twins against the fixtures' float64 golden logits (hf/golden.safetensors)."""
    _, golden = read_safetensors(os.path.join(HF, "golden.safetensors"))
    for m, load, fixture in (("gpt2", gpt2_model, "tiny-gpt2"),
                             ("llama", llama_model, "tiny-llama"),
                             ("llama31", llama_model, "tiny-llama31")):
        cfg, params, fwd = load(fixture)
        worst, i = 0.0, 0
        while f"{m}.p{i}.ids" in golden:
            ids = torch.from_numpy(golden[f"{m}.p{i}.ids"].astype(np.int64))[None]
            with torch.no_grad():
                logits = fwd(params, ids, cfg)[0]
            worst = max(worst, max_diff(logits.numpy(), golden[f"{m}.p{i}.logits"]))
            i += 1
        assert i > 0
        print(f"fp32 twin vs {fixture}'s float64 golden ({i} prompts): max |diff| {worst:.3g}")
        assert worst <= TWIN_TOL, f"{m}: the fp32 twin does not match the fixture's golden"


# ---------------------------------------------------------------------------------------------


def draw_ids(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg["vocab_size"], (cfg["steps"], cfg["B"], cfg["T"] + 1), generator=g)
    return ids.to(torch.int32)


def finetune(m, ids=None):
    """-> [(name, tensor)] of model m in file order (ids drawn from m's seed unless given)."""
    cfg, init, fwd = LOADERS[m](MODELS[m]["fixture"])
    if ids is None:
        ids = draw_ids(cfg, MODELS[m]["seed"])
    res = run_all(cfg, init, ids, fwd)
    final = {n: res["final." + n] for n in init}
    with torch.no_grad():
        final_logits = fwd(final, batch(ids, 0, cfg["T"])[0], cfg)
    out = [(f"{m}.ids", ids), (f"{m}.logits0", res["logits"]),
           (f"{m}.train_losses", res["train_losses"]),
           (f"{m}.train_grad_norms", res["train_grad_norms"])]
    out += [(f"{m}.final.{n}", t) for n, t in final.items()]
    out.append((f"{m}.final_logits", final_logits))
    tl = res["train_losses"]
    final_loss = gen_golden.loss_of(final_logits, batch(ids, 0, cfg["T"])[1]).item()
    print(f"{m}: train_losses {tl[0].item():.4f} -> {tl[-1].item():.4f}, "
          f"batch 0 loss under the final weights {final_loss:.4f}")
    return cfg, out


def metadata(cfgs):
    md = {k: repr(v) if isinstance(v, float) else str(v) for k, v in TRAIN.items()}
    for m, spec in MODELS.items():
        md[f"{m}.seed"] = str(spec["seed"])
        md[f"{m}.fixture"] = "tests/golden/hf/" + spec["fixture"]
        md[f"{m}.vocab_size"] = str(cfgs[m]["vocab_size"])
    md.update(precision="fp32", format="pt", generator="tests/golden/gen_finetune_golden.py",
              torch_version=torch.__version__)
    return md


def is_key_bias_noise(name):
    """gpt2.final.h.*.attn.c_attn.bias: the key third is rounding noise (see the docstring)."""
    return name.startswith("gpt2.final.") and name.endswith(".attn.c_attn.bias")


def generate(path):
    check_twins()
    tensors, cfgs = [], {}
    for m in MODELS:
        cfgs[m], out = finetune(m)
        tensors += [(n, "I32" if t.dtype == torch.int32 else "F32", t.numpy()) for n, t in out]
    for _, dtype, a in tensors:
        assert a.dtype == (np.int32 if dtype == "I32" else np.float32)
    write_safetensors(path, tensors, metadata(cfgs))
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def check(path):
    meta, st = read_safetensors(path)
    check_twins()
    names, cfgs, worst = [], {}, 0.0
    for m in MODELS:
        ids = torch.from_numpy(st[f"{m}.ids"].copy())
        cfgs[m], out = finetune(m, ids)
        assert torch.equal(draw_ids(cfgs[m], MODELS[m]["seed"]), ids), f"{m}.ids not reproducible"
        for n, t in out:
            names.append(n)
            ref, ours = st[n].copy(), t.numpy().copy()
            assert ref.shape == ours.shape and ref.dtype == ours.dtype, n
            if is_key_bias_noise(n):
                C = cfgs[m]["n_embd"]
                ref[C:2 * C] = ours[C:2 * C] = 0
            d = max_diff(ours, ref)
            scale = max(1.0, float(np.max(np.abs(ref))))
            worst = max(worst, d / scale)
            assert d <= 1e-5 * scale, f"{n}: max |diff| {d}"
    assert list(st) == names, "tensor set/order differs from the spec"
    assert meta == dict(metadata(cfgs), torch_version=meta["torch_version"]), "metadata differs"
    print(f"ids, logits, training, final weights: max scaled |diff| {worst:.3g}")
    print(f"check OK: {path}")


def main():
    return gen_golden.cli(__doc__, DEFAULT_OUT, "output file path", generate, check)


if __name__ == "__main__":
    sys.exit(main())
