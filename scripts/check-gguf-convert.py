#!/usr/bin/env python3
"""Cross-checks `atomrl convert gguf` against the `gguf` Python package (pip install gguf numpy).

Usage: scripts/check-gguf-convert.py FILE.gguf HF_DIR [TENSOR_SUBSTRING...]

Dequantizes every GGUF tensor with gguf.quants, undoes llama.cpp's q/k rotary permutation with
numpy, rounds to bf16 and compares with HF_DIR/model.safetensors (read with numpy alone).
"""
import json
import re
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    if name in HF:
        return HF[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    return f"model.layers.{m[1]}.{LAYER[m[2]]}.{m[3]}"


def unpermute(w, n_head):
    # Inverse of convert_hf_to_gguf's reshape(n_head, 2, hd/2, ...).swapaxes(1, 2).
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def to_bf16_bits(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.uint16).reshape(v["shape"])
    return out


def main():
    gguf_path, hf_dir, *filters = sys.argv[1:]
    r = GGUFReader(gguf_path)
    arch = r.fields["general.architecture"].contents()
    n_head = r.fields[f"{arch}.attention.head_count"].contents()
    n_kv = r.fields[f"{arch}.attention.head_count_kv"].contents()
    ours = read_safetensors(f"{hf_dir}/model.safetensors")
    checked = 0
    for t in r.tensors:
        if filters and not any(s in t.name for s in filters):
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape)))
        if arch == "llama" and ".attn_q." in t.name:
            w = unpermute(w, n_head)
        elif arch == "llama" and ".attn_k." in t.name:
            w = unpermute(w, n_kv)
        got = ours[hf_name(t.name)]
        assert got.shape == w.shape, (t.name, got.shape, w.shape)
        diff = np.count_nonzero(got != to_bf16_bits(w))
        print(f"{t.name:32} {t.tensor_type.name:5} {str(w.shape):14} bf16 mismatches: {diff}")
        assert diff == 0, t.name
        checked += 1
    print(f"ok: {checked} tensors identical")


if __name__ == "__main__":
    main()
