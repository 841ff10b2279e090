#!/usr/bin/python3
"""The PyTorch peer of bench/train_step under torch.autocast("cpu", dtype=torch.bfloat16).

Loads shared/peers/torch_gpt_bench.py unchanged and wraps its model's forward (and so its
loss) in bf16 autocast, the way a PyTorch user trains in bf16 on a CPU: matmuls in bf16 through
oneDNN, fp32 master weights, backward outside the autocast region. Same arguments and RESULT line
as the peer (one shape and mode per process).
"""
import importlib.util
import os
import sys

path = os.environ.get("ZF_PEER", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                              "..", "shared", "peers", "torch_gpt_bench.py"))
spec = importlib.util.spec_from_file_location("torch_gpt_bench", path)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
build_fp32 = peer.build_model


def build_autocast(torch, cfg):
    model = build_fp32(torch, cfg)
    forward = model.forward

    def forward_bf16(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    model.forward = forward_bf16
    return model


peer.build_model = build_autocast
if "--shape" not in sys.argv or "--mode" not in sys.argv:
    sys.exit("torch_autocast_peer.py runs one --shape and --mode (bench/train_step calls it)")
peer.main()
