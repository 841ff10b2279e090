#!/usr/bin/python3
"""Writes the tiny Mixtral Hugging Face fixture under tests/golden/hf/ (torch only, deterministic):

  tiny-mixtral/  config.json (model_type mixtral, architectures MixtralForCausalLM: hidden 64,
                 2 layers, GQA 4 heads / 2 kv heads (head_dim 16), intermediate_size 96 = the
                 size of each expert, num_local_experts 4, num_experts_per_tok 2,
                 router_aux_loss_coef 0.02, output_router_logits false, 128 positions,
                 rms_norm_eps 1e-5, rope_theta 1e6, sliding_window null, untied head, silu;
                 vocab_size / bos_token_id / eos_token_id / torch_dtype copied from tiny-llama's
                 config.json: the same tokenizer)
                 model.safetensors (BF16, HF Mixtral names, nn.Linear layout [out, in]):
                   model.embed_tokens.weight [V, C]
                   per layer i, prefix model.layers.{i}.:
                     input_layernorm.weight [C], post_attention_layernorm.weight [C]
                     self_attn.q_proj.weight [4*16, C], k_proj / v_proj [2*16, C], o_proj [C, 64]
                     block_sparse_moe.gate.weight [E, C]               (the router, no bias)
                     block_sparse_moe.experts.{e}.w1.weight [I, C]     (gate projection)
                     block_sparse_moe.experts.{e}.w3.weight [I, C]     (up projection)
                     block_sparse_moe.experts.{e}.w2.weight [C, I]     (down projection)
                   model.norm.weight [C], lm_head.weight [V, C]
                 drawn after torch.manual_seed(45) at gen_hf.llama_weights' scales, the router
                 at 0.2 (seed 2 and router 0.5 gave router near ties: see SEED below)
                 tokenizer.json: a byte-identical copy of tiny-llama/tokenizer.json
  mixtral_golden.safetensors  for each prompt i of gen_hf.PROMPTS (texts as gen_hf's TEXTS["llama"]:
                 p0 starts with <|begin_of_text|>; kept as "mixtral.p<i>.text" in __metadata__):
                   "mixtral.p<i>.ids"    I32 [T]        tiny-llama tokenizer ids (gen_hf's BPE
                                                        rebuilt here, checked equal to golden.
                                                        safetensors' "llama.p<i>.ids")
                   "mixtral.p<i>.logits" F32 [T, V]     the float64 twin, rounded to fp32
                   "mixtral.p<i>.route"  I32 [L, T, 2]  the experts chosen per layer and row, in
                                                        descending router probability
                 "mixtral.greedy" I32 [12]: greedy continuation of p0 (gen_hf.greedy).

The twin follows transformers' modeling_mixtral MixtralForCausalLM (transformers is not installed
here, so it was not compared against it): Llama's decoder layer (RMSNorm, rotate_half RoPE with
inv_freq = 1 / rope_theta^(2j/hd), repeat_kv GQA, causal softmax attention, no biases, no sliding
window) whose MLP is MixtralSparseMoeBlock: for the rows h = post_attention_layernorm(x) [n, C]
    router_logits = h @ gate^T                                  [n, E]
    p             = softmax(router_logits) over experts
    sel, g        = top-2 of p (descending), g /= sum(g)        (renormalised top-k gates)
    y[r]          = sum_j g[r, j] * expert_{sel[r, j]}(h[r]),  expert_e(v) = (silu(v w1^T) * (v w3^T)) w2^T
    x             = x + y
every layer MoE, dropless (no capacity), no router jitter at inference, the aux loss unused. It is
zeroflow's docs/moe.md with router=softmax, k=2, norm_topk, dropless, llama experts. All of it in
float64 from exactly the stored bf16 weights (HF's softmax(dtype=torch.float) would round p to fp32;
the twin does not). The sparse twin mixtral_forward is written as HF's block (per expert: rows that
chose it, index_add_ of weight * expert output); a second, dense twin computes all 4 experts for
every row and masks them by the top-2 selection (argsort instead of topk); both must agree to 1e-12.

Robustness for an fp32 implementation: every row of every forward (the prompts and every prefix of
the greedy path) must have router probability gap p(2nd) - p(3rd) > 1e-3 in each layer, and every
greedy step a top-1 / top-2 logit gap > 1e-3 (gen_hf.greedy asserts that); the minimum gaps are
printed. As a direct check the same sparse twin also runs in float32 on every one of those forwards:
it must choose the same experts on every row and the same next token.

zeroflow's canonical llama MoE names (docs/moe.md, matrices [in, out]) come from these as
    layers.{i}.mlp.router.weight [C, E]                  = gate.weight^T
    layers.{i}.mlp.experts.{e}.gate_up_proj.weight [C, 2I] = cat([w1, w3], 0)^T   (gate columns first)
    layers.{i}.mlp.experts.{e}.down_proj.weight [I, C]   = w2^T

Run from anywhere:  /usr/bin/python3 tests/golden/gen_hf_mixtral.py
"""
import json
import math
import os
import shutil
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_hf  # noqa: E402

OUT = gen_hf.OUT
LLAMA_DIR = os.path.join(OUT, "tiny-llama")
GAP_MIN = 1e-3

MIXTRAL = dict(hidden=64, layers=2, heads=4, kv_heads=2, inter=96, experts=4, top_k=2,
               positions=128, theta=1e6, eps=1e-5)
# Seed 2 with router scale 0.5 (the first choice) put the 2nd and 3rd router probabilities within
# 1e-4 of each other (at 0.5 the router logits have std ~4: the top expert takes most of the mass
# and the 2nd and 3rd probabilities both sit near 0). A seeds x scales scan picked seed 45 at 0.2
# (logit std ~1.6, mean top-1 probability ~0.6): the smallest router gap of any row is 2.4e-3.
SEED = 45
ROUTER_SCALE = 0.2


def mixtral_weights(vocab_size):
    """HF Mixtral names -> bf16 tensors (nn.Linear layout [out, in])."""
    torch.manual_seed(SEED)
    c, H = MIXTRAL, MIXTRAL["hidden"]
    hd = H // c["heads"]
    w = {"model.embed_tokens.weight": torch.randn(vocab_size, H) * 0.5}
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(H)
        w[p + "self_attn.q_proj.weight"] = torch.randn(c["heads"] * hd, H) * 0.15
        w[p + "self_attn.k_proj.weight"] = torch.randn(c["kv_heads"] * hd, H) * 0.15
        w[p + "self_attn.v_proj.weight"] = torch.randn(c["kv_heads"] * hd, H) * 0.1
        w[p + "self_attn.o_proj.weight"] = torch.randn(H, c["heads"] * hd) * 0.1
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(H)
        m = p + "block_sparse_moe."
        w[m + "gate.weight"] = torch.randn(c["experts"], H) * ROUTER_SCALE
        for e in range(c["experts"]):
            w[m + f"experts.{e}.w1.weight"] = torch.randn(c["inter"], H) * 0.1
            w[m + f"experts.{e}.w3.weight"] = torch.randn(c["inter"], H) * 0.1
            w[m + f"experts.{e}.w2.weight"] = torch.randn(H, c["inter"]) * 0.1
    w["model.norm.weight"] = 1 + 0.1 * torch.randn(H)
    w["lm_head.weight"] = torch.randn(vocab_size, H) * 0.2
    return {k: v.to(torch.bfloat16) for k, v in w.items()}


def expert(w, m, e, h):
    """MixtralBlockSparseTop2MLP: w2(silu(w1(h)) * w3(h))."""
    a = torch.nn.functional.silu(h @ w[m + f"experts.{e}.w1.weight"].T)
    return (a * (h @ w[m + f"experts.{e}.w3.weight"].T)) @ w[m + f"experts.{e}.w2.weight"].T


def moe_sparse(w, m, h):
    """MixtralSparseMoeBlock as transformers writes it. Returns (y, sel [n, k], probs [n, E])."""
    c = MIXTRAL
    router_logits = h @ w[m + "gate.weight"].T
    probs = torch.softmax(router_logits, dim=1)
    gates, sel = torch.topk(probs, c["top_k"], dim=-1)
    gates = gates / gates.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(h)
    mask = torch.nn.functional.one_hot(sel, num_classes=c["experts"]).permute(2, 1, 0)
    for e in range(c["experts"]):
        idx, top_x = torch.where(mask[e])
        y.index_add_(0, top_x, expert(w, m, e, h[top_x]) * gates[top_x, idx, None])
    return y, sel, probs


def moe_dense(w, m, h):
    """The same block computed densely: every expert on every row, masked by the top-2 gates."""
    c = MIXTRAL
    z = h @ w[m + "gate.weight"].T
    ez = (z - z.max(-1, keepdim=True).values).exp()
    probs = ez / ez.sum(-1, keepdim=True)
    order = probs.argsort(-1, descending=True)[:, :c["top_k"]]
    keep = torch.zeros_like(probs).scatter(1, order, 1.0)
    gates = probs * keep
    gates = gates / gates.sum(-1, keepdim=True)                     # [n, E], zero off the top-2
    outs = torch.stack([expert(w, m, e, h) for e in range(c["experts"])], 1)  # [n, E, C]
    return (gates.unsqueeze(-1) * outs).sum(1), order, probs


def mixtral_forward(w, ids, moe=moe_sparse, routes=None, dtype=torch.float64):
    """logits [T, V] (float64 unless dtype says otherwise); routes (a list) receives per layer
    (sel [T, k], probs [T, E])."""
    c = MIXTRAL
    w = {k: v.to(dtype) for k, v in w.items()}
    nh, nkv, T = c["heads"], c["kv_heads"], len(ids)
    hd = c["hidden"] // nh
    inv_freq = gen_hf.llama_inv_freq(hd, c["theta"])
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq).to(dtype)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        h = gen_hf.rms_norm(x, w[p + "input_layernorm.weight"], c["eps"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q, k = q * cos + gen_hf.rotate_half(q) * sin, k * cos + gen_hf.rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)  # repeat_kv
        x = x + gen_hf.causal_attention(q, k, v) @ w[p + "self_attn.o_proj.weight"].T
        h = gen_hf.rms_norm(x, w[p + "post_attention_layernorm.weight"], c["eps"])
        y, sel, probs = moe(w, p + "block_sparse_moe.", h)
        if routes is not None:
            routes.append((sel, probs))
        x = x + y
    return gen_hf.rms_norm(x, w["model.norm.weight"], c["eps"]) @ w["lm_head.weight"].T


def route_gap(probs):
    """Per row: 2nd largest minus 3rd largest router probability."""
    s = probs.sort(-1, descending=True).values
    return s[:, 1] - s[:, 2]


def read_safetensors(path):
    """name -> tensor (F32 / I32 / BF16) and the __metadata__ dict."""
    dt = {"F32": torch.float32, "I32": torch.int32, "BF16": torch.bfloat16}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        raw = bytearray(data[a:b])
        if h["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dt[h["dtype"]])
        out[name] = t.reshape(h["shape"]).clone()
    return out, meta


def main():
    # The tokenizer: tiny-llama's, rebuilt with gen_hf's functions and checked against its files.
    with open(gen_hf.CORPUS, "rb") as f:
        text = f.read(gen_hf.TRAIN_BYTES).decode("utf-8", errors="ignore")
    gen_hf.check_classes(text + "".join(gen_hf.PROMPTS))
    vocab, merges = gen_hf.train_bpe(text)
    n = len(vocab)
    added = {"<|begin_of_text|>": n, "<|end_of_text|>": n + 1}
    tok = gen_hf.bpe_tokenizer(vocab, merges, gen_hf.LLAMA3_PY, added, True)
    with open(os.path.join(LLAMA_DIR, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    assert tj["model"]["vocab"] == vocab and tj["model"]["merges"] == [list(m) for m in merges]
    assert {t["content"]: t["id"] for t in tj["added_tokens"]} == added
    with open(os.path.join(LLAMA_DIR, "config.json"), encoding="utf-8") as f:
        llama_config = json.load(f)
    assert llama_config["vocab_size"] == n + 2
    llama_golden, _ = read_safetensors(os.path.join(OUT, "golden.safetensors"))
    texts = gen_hf.TEXTS["llama"]
    assert len(texts) == len(gen_hf.PROMPTS)
    prompt_ids = []
    for i, t in enumerate(texts):
        ids = tok.encode(t)
        assert ids == llama_golden[f"llama.p{i}.ids"].tolist(), f"p{i}: ids differ from gen_hf's"
        prompt_ids.append(ids)

    # tiny-mixtral
    d = os.path.join(OUT, "tiny-mixtral")
    os.makedirs(d, exist_ok=True)
    c = MIXTRAL
    config = {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "hidden_size": c["hidden"], "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
        "intermediate_size": c["inter"], "num_local_experts": c["experts"],
        "num_experts_per_tok": c["top_k"], "router_aux_loss_coef": 0.02,
        "output_router_logits": False, "max_position_embeddings": c["positions"],
        "rms_norm_eps": c["eps"], "rope_theta": c["theta"], "sliding_window": None,
        "tie_word_embeddings": False, "hidden_act": "silu",
        "vocab_size": llama_config["vocab_size"], "bos_token_id": llama_config["bos_token_id"],
        "eos_token_id": llama_config["eos_token_id"], "torch_dtype": llama_config["torch_dtype"]}
    gen_hf.dump_json(os.path.join(d, "config.json"), config)
    shutil.copyfile(os.path.join(LLAMA_DIR, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
    mw = mixtral_weights(config["vocab_size"])
    model_path = os.path.join(d, "model.safetensors")
    gen_hf.write_safetensors(model_path, list(mw.items()), {"format": "pt"})
    back, _ = read_safetensors(model_path)  # the twin reads exactly what the file holds
    assert back.keys() == mw.keys() and all(torch.equal(back[k].view(torch.int16),
                                                         mw[k].view(torch.int16)) for k in mw)

    # golden
    golden = []
    meta = {"generator": "tests/golden/gen_hf_mixtral.py", "precision": "float64 twin",
            "route": "[layers, T, top_k] expert ids per row, descending router probability"}
    gaps = {"route": math.inf, "greedy": math.inf, "twins": 0.0, "fp32": 0.0}

    def checked_forward(w, ids):
        routes, dense_routes, fp32_routes = [], [], []
        with torch.no_grad():
            logits = mixtral_forward(w, ids, moe_sparse, routes)
            dense = mixtral_forward(w, ids, moe_dense, dense_routes)
            fp32 = mixtral_forward(w, ids, moe_sparse, fp32_routes, torch.float32)
        diff = float((logits - dense).abs().max())
        assert diff < 1e-12, f"sparse and dense twins differ by {diff}"
        gaps["twins"] = max(gaps["twins"], diff)
        gaps["fp32"] = max(gaps["fp32"], float((logits - fp32.double()).abs().max()))
        assert int(fp32[-1].argmax()) == int(logits[-1].argmax()), "fp32 picks another token"
        for (sel, probs), (dsel, _), (fsel, _) in zip(routes, dense_routes, fp32_routes):
            assert torch.equal(sel, dsel) and torch.equal(sel, fsel), "the routes differ"
            g = float(route_gap(probs).min())
            assert g > GAP_MIN, f"router near tie: p(2nd) - p(3rd) = {g}"
            gaps["route"] = min(gaps["route"], g)
        top2 = logits[-1].topk(2).values
        gaps["greedy_step"] = float(top2[0] - top2[1])
        return logits, routes

    for i, (t, ids) in enumerate(zip(texts, prompt_ids)):
        logits, routes = checked_forward(mw, ids)
        route = torch.stack([sel for sel, _ in routes]).to(torch.int32)  # [L, T, 2]
        golden.append((f"mixtral.p{i}.ids", torch.tensor(ids, dtype=torch.int32)))
        golden.append((f"mixtral.p{i}.logits", logits.float()))
        golden.append((f"mixtral.p{i}.route", route))
        meta[f"mixtral.p{i}.text"] = t
        load = torch.bincount(route.flatten().long(), minlength=c["experts"]).tolist()
        print(f"mixtral.p{i}: {len(ids)} tokens, logits std {float(logits.std()):.3f}, "
              f"expert load {load}")

    def greedy_forward(w, ids):
        logits, _ = checked_forward(w, ids)
        gaps["greedy"] = min(gaps["greedy"], gaps["greedy_step"])
        return logits

    g = gen_hf.greedy(greedy_forward, mw, prompt_ids[0])
    golden.append(("mixtral.greedy", torch.tensor(g, dtype=torch.int32)))
    print(f"mixtral.greedy: {g}")
    print(f"min router gap p(2nd) - p(3rd): {gaps['route']:.6f}; min greedy top-1/top-2 logit "
          f"gap: {gaps['greedy']:.6f}; max |sparse - dense| twin logits: {gaps['twins']:.3g}; "
          f"max |fp64 - fp32| logits: {gaps['fp32']:.3g}")
    gen_hf.write_safetensors(os.path.join(OUT, "mixtral_golden.safetensors"), golden, meta)


if __name__ == "__main__":
    main()
