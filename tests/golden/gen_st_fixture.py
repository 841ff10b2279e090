#!/usr/bin/python3
"""Writes tests/golden/st_python_fixture.safetensors, a tiny safetensors file built by hand with
struct + json (stdlib only, no torch / safetensors library), for tests/storage/test_safetensors.cpp
("reads a file written by Python"). The C++ test hard-codes the values below.

Run from the repository root:  /usr/bin/python3 tests/golden/gen_st_fixture.py

Layout choices that differ from our C++ writer on purpose: json.dumps default separators (", ",
": "), "__metadata__" first, tensors in the order listed here (I64 first so every tensor stays
aligned), a zero-size tensor and a scalar. The header is space-padded to a multiple of 8 as the
Hugging Face writer does.
"""
import json
import os
import struct


def f32_to_bf16_bits(x):
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even (no NaNs here)


TENSORS = [
    # name, dtype, shape, packed little-endian bytes
    ("ids64", "I64", [2, 3], struct.pack("<6q", 0, 1, -1, 2147483647, -2147483648, 50256)),
    ("weight", "F32", [2, 3], struct.pack("<6f", 0.5, -1.25, 3.0, 1024.0, -0.0078125, 6.5)),
    ("ids32", "I32", [3], struct.pack("<3i", 7, -8, 50256)),
    ("scalar", "F32", [], struct.pack("<f", 42.0)),
    ("empty", "F32", [0, 4], b""),
    # F16 via struct's 'e' format (IEEE binary16): 1, -2, max normal, min subnormal, 0x3555
    ("half", "F16", [5], struct.pack("<5e", 1.0, -2.0, 65504.0, 2.0 ** -24, 0.333251953125)),
    ("bf", "BF16", [2, 2],
     struct.pack("<4H", *[f32_to_bf16_bits(v) for v in (1.0, -3.0, 3.140625, 2.0 ** -130)])),
    ("bytes", "U8", [4], bytes([0, 1, 127, 255])),
]


def main():
    header = {"__metadata__": {"format": "pt", "producer": "python struct+json"}}
    off = 0
    for name, dtype, shape, data in TENSORS:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    hb = json.dumps(header).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "st_python_fixture.safetensors")
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, _, data in TENSORS:
            f.write(data)
    print(f"wrote {out}: header {len(hb)} bytes, data {off} bytes")


if __name__ == "__main__":
    main()
