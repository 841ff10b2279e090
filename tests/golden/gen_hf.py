#!/usr/bin/python3
"""Writes the Hugging Face fixtures under tests/golden/hf/ (torch only, deterministic):

  tiny-llama/  config.json (model_type llama, GQA 4 heads / 2 kv heads), model.safetensors (BF16),
               tokenizer.json (Llama-3 style: Split regex + ByteLevel, merges as [a, b] pairs,
               ignore_merges, added tokens <|begin_of_text|> <|end_of_text|> outside model.vocab)
  tiny-llama31/ tiny-llama's weights without lm_head.weight (tie_word_embeddings: true, as Llama
               3.2 has it; the embedding scaled by 0.2), config.json with Llama 3.1's
               rope_scaling (rope_type llama3, factor 8, low/high_freq_factor 1/4,
               original_max_position_embeddings 32: of the 8 frequencies of head_dim 16 one is
               kept, one smoothed and six divided by 8), tiny-llama's tokenizer.json
  tiny-gpt2/   config.json (model_type gpt2), model.safetensors (F32, names prefixed
               "transformer.", no lm_head: tied, with the old attn.bias / attn.masked_bias
               buffers), tokenizer.json (ByteLevel pre-tokenizer, merges as "a b" strings,
               <|endoftext|> both in model.vocab and in added_tokens as GPT-2's file has it)
  golden.safetensors  for each model m and prompt i: "m.p<i>.ids" I32 [T] (what this script's
               BPE gives for the text "m.p<i>.text" in __metadata__), "m.p<i>.logits" F32 [T, V]
               (the float64 twin below, rounded to fp32), "m.greedy" I32 [12] (greedy
               continuation of p0).

Both tokenizers share one byte-level BPE (256 byte tokens in GPT-2's bytes_to_unicode order, then
200 merges) trained here on the first 100 KB of data/moby-dick.txt. The twins follow HF
LlamaForCausalLM (RMSNorm, rotate_half RoPE with transformers' modeling_rope_utils llama3
frequencies when rope_scaling says so, repeat_kv GQA, SwiGLU, untied or tied head) and
GPT2LMHeadModel (LayerNorm, Conv1D [in, out], gelu_new, learned positions, tied head) and compute
in float64 from exactly the stored weights (Llama's are rounded to bf16 first).

Python's re has no \\p{L}: the patterns are rewritten with [^\\W\\d_] (letters) and \\d (numbers),
which agree with Unicode L / N on every character of the training text and prompts (checked).

Run from anywhere:  /usr/bin/python3 tests/golden/gen_hf.py
"""
import collections
import json
import math
import os
import re
import struct
import unicodedata

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "hf")
CORPUS = os.path.join(HERE, "..", "..", "data", "moby-dick.txt")
TRAIN_BYTES = 100_000
N_MERGES = 200
N_GREEDY = 12

# The patterns as tokenizer.json holds them (PCRE / Oniguruma syntax) and their Python twins.
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
GPT2_PY = r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PY = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,3}|"
             r" ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

PROMPTS = [
    "Call me Ishmael",
    "It is a way I have of driving off the spleen.",
    "Whenever it is a damp, drizzly November in my soul\u2014then, in 1851, I go to sea:\n\n"
    "people\u2019s hats'LL fly!",
]
TEXTS = {
    "llama": ["<|begin_of_text|>" + PROMPTS[0], PROMPTS[1], PROMPTS[2]],
    "gpt2": [PROMPTS[0], PROMPTS[1] + "<|endoftext|>Some years ago", PROMPTS[2]],
}
TEXTS["llama31"] = TEXTS["llama"]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs))), bs  # byte -> char, byte order of ids 0..255


B2U, BYTE_ORDER = bytes_to_unicode()


def check_classes(text):
    """Our Python rewrite of \\p{L} / \\p{N} must agree with Unicode on every character used."""
    for c in set(text):
        cat = unicodedata.category(c)
        assert (cat[0] == "L") == bool(re.fullmatch(r"[^\W\d_]", c)), repr(c)
        assert (cat[0] == "N") == bool(re.fullmatch(r"\d", c)), repr(c)


def word_symbols(word):
    return tuple(B2U[b] for b in word.encode("utf-8"))


def train_bpe(text):
    """Classic BPE on GPT-2 pre-tokens: merge the most frequent pair (ties: smallest pair)."""
    words = collections.Counter(word_symbols(w) for w in re.findall(GPT2_PY, text))
    merges = []
    for _ in range(N_MERGES):
        pairs = collections.Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    vocab = {B2U[b]: i for i, b in enumerate(BYTE_ORDER)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return vocab, merges


class bpe_tokenizer:
    def __init__(self, vocab, merges, pattern, added, ignore_merges):
        self.vocab, self.pattern, self.added, self.ignore = vocab, pattern, added, ignore_merges
        self.ranks = {m: r for r, m in enumerate(merges)}

    def bpe(self, word):
        syms = list(word_symbols(word))
        if self.ignore and "".join(syms) in self.vocab:
            return [self.vocab["".join(syms)]]
        while len(syms) > 1:
            ranked = [(self.ranks.get(p, math.inf), i) for i, p in enumerate(zip(syms, syms[1:]))]
            r, i = min(ranked)
            if r == math.inf:
                break
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [self.vocab[s] for s in syms]

    def encode(self, text):
        specials = sorted(self.added, key=len, reverse=True)
        pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", text)
        ids = []
        for piece in pieces:
            if piece in self.added:
                ids.append(self.added[piece])
            else:
                for w in re.findall(self.pattern, piece):
                    ids += self.bpe(w)
        return ids


def tokenizer_json(vocab, merges, added, pre_tokenizer, pair_merges, ignore_merges, post):
    model_vocab = dict(vocab)
    if not pair_merges:  # GPT-2's file also lists <|endoftext|> in model.vocab
        model_vocab.update(added)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for c, i in added.items()],
        "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": ignore_merges, "vocab": model_vocab,
                  "merges": [[a, b] if pair_merges else f"{a} {b}" for a, b in merges]},
    }


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, torch tensor); F32 / I32 / BF16 written raw, little-endian."""
    dt = {torch.float32: "F32", torch.int32: "I32", torch.bfloat16: "BF16"}
    # Larger elements first so every tensor stays aligned to its element size.
    tensors = sorted(tensors, key=lambda nt: -nt[1].element_size())
    header = {"__metadata__": metadata} if metadata else {}
    blobs, off = [], 0
    for name, t in tensors:
        t = t.contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": dt[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- Llama
LLAMA = dict(hidden=64, layers=2, heads=4, kv_heads=2, inter=160, positions=128, theta=10000.0,
             eps=1e-5)
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def llama_weights(vocab_size):
    """HF names -> bf16 tensors (nn.Linear layout [out, in])."""
    torch.manual_seed(0)
    c, H = LLAMA, LLAMA["hidden"]
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
        w[p + "mlp.gate_proj.weight"] = torch.randn(c["inter"], H) * 0.1
        w[p + "mlp.up_proj.weight"] = torch.randn(c["inter"], H) * 0.1
        w[p + "mlp.down_proj.weight"] = torch.randn(H, c["inter"]) * 0.1
    w["model.norm.weight"] = 1 + 0.1 * torch.randn(H)
    w["lm_head.weight"] = torch.randn(vocab_size, H) * 0.2
    return {k: v.to(torch.bfloat16) for k, v in w.items()}


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def causal_attention(q, k, v):  # [heads, T, hd] each
    T, hd = q.shape[1], q.shape[2]
    att = q @ k.transpose(1, 2) / math.sqrt(hd)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return (att.softmax(-1) @ v).transpose(0, 1).reshape(T, -1)


def llama_inv_freq(hd, theta, rope_scaling=None):
    """[hd/2] float64; rope_scaling None or llama3, as transformers' _compute_llama3_parameters:
    by wavelength 2 pi / inv_freq, shorter than old / high kept, longer than old / low divided by
    factor, in between (1 - s) * inv_freq / factor + s * inv_freq, s = (old / wavelen - low) /
    (high - low)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    if rope_scaling is None:
        return inv_freq
    assert rope_scaling["rope_type"] == "llama3"
    factor, old = rope_scaling["factor"], rope_scaling["original_max_position_embeddings"]
    low, high = rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    s = (old / wavelen - low) / (high - low)
    smoothed = (1 - s) * scaled / factor + s * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


def llama_forward(w, ids, rope_scaling=None):
    c = LLAMA
    w = {k: v.double() for k, v in w.items()}
    nh, nkv, T = c["heads"], c["kv_heads"], len(ids)
    hd = c["hidden"] // nh
    inv_freq = llama_inv_freq(hd, c["theta"], rope_scaling)
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], c["eps"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)  # repeat_kv
        x = x + causal_attention(q, k, v) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], c["eps"])
        act = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (
            h @ w[p + "mlp.up_proj.weight"].T)
        x = x + act @ w[p + "mlp.down_proj.weight"].T
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])  # tied when absent
    return rms_norm(x, w["model.norm.weight"], c["eps"]) @ head.T


# ---------------------------------------------------------------- GPT-2
GPT2 = dict(hidden=64, layers=2, heads=4, positions=128, eps=1e-5)


def gpt2_weights(vocab_size):
    """HF names without the "transformer." prefix -> fp32 tensors (Conv1D layout [in, out])."""
    torch.manual_seed(1)
    c, H = GPT2, GPT2["hidden"]
    w = {"wte.weight": torch.randn(vocab_size, H) * 0.1,
         "wpe.weight": torch.randn(c["positions"], H) * 0.1}
    for i in range(c["layers"]):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".weight"] = 1 + 0.1 * torch.randn(H)
            w[p + ln + ".bias"] = 0.05 * torch.randn(H)
        for name, shape in (("attn.c_attn", (H, 3 * H)), ("attn.c_proj", (H, H)),
                            ("mlp.c_fc", (H, 4 * H)), ("mlp.c_proj", (4 * H, H))):
            w[p + name + ".weight"] = torch.randn(*shape) * 0.2
            w[p + name + ".bias"] = torch.randn(shape[1]) * 0.02
    w["ln_f.weight"] = 1 + 0.1 * torch.randn(H)
    w["ln_f.bias"] = 0.05 * torch.randn(H)
    return w


def gpt2_forward(w, ids):
    c = GPT2
    w = {k: v.double() for k, v in w.items()}
    H, nh, T = c["hidden"], c["heads"], len(ids)
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (H,), w[p + ".weight"], w[p + ".bias"],
                                                     c["eps"])
    lin = lambda x, p: x @ w[p + ".weight"] + w[p + ".bias"]
    x = w["wte.weight"][torch.tensor(ids)] + w["wpe.weight"][:T]
    for i in range(c["layers"]):
        p = f"h.{i}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(H, -1)
        heads = lambda t: t.view(T, nh, H // nh).transpose(0, 1)
        x = x + lin(causal_attention(heads(q), heads(k), heads(v)), p + "attn.c_proj")
        m = lin(ln(x, p + "ln_2"), p + "mlp.c_fc")
        m = 0.5 * m * (1 + torch.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m ** 3)))
        x = x + lin(m, p + "mlp.c_proj")
    return ln(x, "ln_f") @ w["wte.weight"].T


def greedy(forward, w, ids):
    ids = list(ids)
    out = []
    for _ in range(N_GREEDY):
        last = forward(w, ids)[-1]
        top2 = last.topk(2).values
        assert float(top2[0] - top2[1]) > 1e-3, "near tie in the greedy continuation"
        nxt = int(last.argmax())
        out.append(nxt)
        ids.append(nxt)
    return out


def llama31_forward(w, ids):
    return llama_forward(w, ids, LLAMA31_ROPE)


def main():
    with open(CORPUS, "rb") as f:
        text = f.read(TRAIN_BYTES).decode("utf-8", errors="ignore")
    check_classes(text + "".join(PROMPTS))
    vocab, merges = train_bpe(text)
    n = len(vocab)
    llama_added = {"<|begin_of_text|>": n, "<|end_of_text|>": n + 1}
    gpt2_added = {"<|endoftext|>": n}
    toks = {"llama": bpe_tokenizer(vocab, merges, LLAMA3_PY, llama_added, True),
            "gpt2": bpe_tokenizer(vocab, merges, GPT2_PY, gpt2_added, False)}
    toks["llama31"] = toks["llama"]

    # tiny-llama
    d = os.path.join(OUT, "tiny-llama")
    os.makedirs(d, exist_ok=True)
    c = LLAMA
    llama_config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c["hidden"], "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
        "intermediate_size": c["inter"], "max_position_embeddings": c["positions"],
        "rms_norm_eps": c["eps"], "rope_theta": c["theta"], "rope_scaling": None,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "hidden_act": "silu", "vocab_size": n + 2, "bos_token_id": n, "eos_token_id": [n + 1],
        "torch_dtype": "bfloat16"}
    dump_json(os.path.join(d, "config.json"), llama_config)
    llama_pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False}]}
    llama_tok = tokenizer_json(vocab, merges, llama_added, llama_pre, True, True, None)
    dump_json(os.path.join(d, "tokenizer.json"), llama_tok)
    lw = llama_weights(n + 2)
    hd = c["hidden"] // c["heads"]
    inv_freq = 1.0 / c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    extra = [(f"model.layers.{i}.self_attn.rotary_emb.inv_freq", inv_freq)
             for i in range(c["layers"])]  # an old HF buffer the loader must ignore
    write_safetensors(os.path.join(d, "model.safetensors"), list(lw.items()) + extra,
                      {"format": "pt"})

    # tiny-llama31: tiny-llama's weights, tied head, Llama 3.1 rope_scaling
    d = os.path.join(OUT, "tiny-llama31")
    os.makedirs(d, exist_ok=True)
    dump_json(os.path.join(d, "config.json"), dict(
        llama_config, rope_scaling=LLAMA31_ROPE, tie_word_embeddings=True))
    dump_json(os.path.join(d, "tokenizer.json"), llama_tok)
    # Tied to tiny-llama's embedding at 0.2x: at full scale each token's own embedding dominates
    # its logits and the greedy continuation repeats one token.
    lw31 = {k: v for k, v in lw.items() if k != "lm_head.weight"}
    lw31["model.embed_tokens.weight"] = (lw["model.embed_tokens.weight"].float() * 0.2).to(
        torch.bfloat16)
    write_safetensors(os.path.join(d, "model.safetensors"), list(lw31.items()), {"format": "pt"})
    base, scaled = llama_inv_freq(hd, c["theta"]), llama_inv_freq(hd, c["theta"], LLAMA31_ROPE)
    bands = ["kept" if r == 1 else "divided" if r == LLAMA31_ROPE["factor"] else "smoothed"
             for r in (base / scaled).tolist()]
    print("llama31 inv_freq:", ", ".join(f"{f:.6g} ({b})" for f, b in zip(scaled.tolist(), bands)))
    assert {"kept", "smoothed", "divided"} <= set(bands), bands

    # tiny-gpt2
    d = os.path.join(OUT, "tiny-gpt2")
    os.makedirs(d, exist_ok=True)
    c = GPT2
    dump_json(os.path.join(d, "config.json"), {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c["hidden"],
        "n_layer": c["layers"], "n_head": c["heads"], "n_positions": c["positions"],
        "n_ctx": c["positions"], "n_inner": None, "vocab_size": n + 1,
        "layer_norm_epsilon": c["eps"], "activation_function": "gelu_new",
        "bos_token_id": n, "eos_token_id": n})
    gpt2_pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                "use_regex": True}
    gpt2_post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                 "use_regex": True}
    dump_json(os.path.join(d, "tokenizer.json"),
              tokenizer_json(vocab, merges, gpt2_added, gpt2_pre, False, False, gpt2_post))
    gw = gpt2_weights(n + 1)
    P = c["positions"]
    st = [("transformer." + k, v) for k, v in gw.items()]
    for i in range(c["layers"]):  # causal-mask buffers old HF GPT-2 files carry
        st.append((f"transformer.h.{i}.attn.bias", torch.tril(torch.ones(P, P)).view(1, 1, P, P)))
        st.append((f"transformer.h.{i}.attn.masked_bias", torch.tensor(-1e4)))
    write_safetensors(os.path.join(d, "model.safetensors"), st, {"format": "pt"})

    # golden
    golden, meta = [], {"generator": "tests/golden/gen_hf.py", "precision": "float64 twin"}
    for m, fwd, w in (("llama", llama_forward, lw), ("gpt2", gpt2_forward, gw),
                      ("llama31", llama31_forward, lw31)):
        for i, t in enumerate(TEXTS[m]):
            ids = toks[m].encode(t)
            with torch.no_grad():
                logits = fwd(w, ids)
            golden.append((f"{m}.p{i}.ids", torch.tensor(ids, dtype=torch.int32)))
            golden.append((f"{m}.p{i}.logits", logits.float()))
            meta[f"{m}.p{i}.text"] = t
            print(f"{m}.p{i}: {len(ids)} tokens, logits std {float(logits.std()):.3f}")
        with torch.no_grad():
            g = greedy(fwd, w, toks[m].encode(TEXTS[m][0]))
        golden.append((f"{m}.greedy", torch.tensor(g, dtype=torch.int32)))
        print(f"{m}.greedy: {g}")
    write_safetensors(os.path.join(OUT, "golden.safetensors"), golden, meta)


if __name__ == "__main__":
    main()
