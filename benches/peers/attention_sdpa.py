"""Peer for attention_causal: PyTorch scaled_dot_product_attention with the flash backend, causal,
bf16, the same shapes as benches/cuda_kernels.rs (model width 2048, 16k tokens per call)."""
from common import report, require_gpu, time_ms  # first: exits cleanly without torch
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


require_gpu()
for hd in (64, 128):
    heads = 2048 // hd
    for seq in (512, 1024, 2048, 4096, 8192):
        batch = max(16384 // seq, 1)
        q, k, v = (torch.randn(batch, heads, seq, hd, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
        flops = 4.0 * seq * seq * hd * heads * batch / 2.0
        report("attention_causal", f"hd={hd} seq={seq} batch={batch} heads={heads}", "torch-sdpa-flash", ms, flops=flops)
