"""Peer for attention_paged (decode: one query token per sequence over its cached context).
Uses flash_attn_with_kvcache over a paged cache when flash-attn is installed, else PyTorch SDPA over
a contiguous cache (which reads the same bytes; no paging). Bytes = K and V of every context."""
from common import report, require_gpu, time_ms  # first: exits cleanly without torch
import torch

require_gpu()
heads, kv_heads, hd, block = 32, 8, 128, 16
try:
    from flash_attn import flash_attn_with_kvcache  # type: ignore
except Exception:  # noqa: BLE001
    flash_attn_with_kvcache = None

for batch, ctx in ((1, 4096), (16, 2048), (64, 2048), (256, 1024), (32, 8192)):
    q = torch.randn(batch, 1, heads, hd, device="cuda", dtype=torch.bfloat16)
    config = f"hd={hd} heads={heads}/{kv_heads} batch={batch} ctx={ctx}"
    nbytes = 2 * batch * ctx * kv_heads * hd * 2
    if flash_attn_with_kvcache is not None:
        blocks = batch * (ctx // block)
        kc = torch.randn(blocks, block, kv_heads, hd, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        table = torch.arange(blocks, device="cuda", dtype=torch.int32).view(batch, -1)
        lens = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
        ms = time_ms(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, block_table=table, causal=True))
        report("attention_paged", config, "flash-attn-paged", ms, nbytes=nbytes)
    k = torch.randn(batch, kv_heads, ctx, hd, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    qt = q.transpose(1, 2)
    ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, k, v, enable_gqa=True))
    report("attention_paged", config, "torch-sdpa-contiguous", ms, nbytes=nbytes)
