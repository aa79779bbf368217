"""Peer for attention_causal and attention_backward: PyTorch scaled_dot_product_attention with the
flash backend, causal, bf16, the same shapes as benches/cuda_kernels.rs (model width 2048, 16k
tokens per call). The backward is timed alone (autograd.grad of a kept graph) and counted as
five products, as atomrl's line is."""
from common import report, require_gpu, time_ms  # first: exits cleanly without torch
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


require_gpu()
for hd in (64, 128):
    heads = 2048 // hd
    for seq in (512, 1024, 2048, 4096, 8192):
        batch = max(16384 // seq, 1)
        config = f"hd={hd} seq={seq} batch={batch} heads={heads}"
        product = 2.0 * seq * seq * hd * heads * batch / 2.0  # one product, half under the mask
        q, k, v = (torch.randn(batch, heads, seq, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            with torch.no_grad():
                ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
            report("attention_causal", config, "torch-sdpa-flash", ms, flops=2 * product)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            d_out = torch.randn_like(out)
            ms = time_ms(lambda: torch.autograd.grad(out, (q, k, v), d_out, retain_graph=True))
            report("attention_backward", config, "torch-sdpa-flash", ms, flops=5 * product)
        del q, k, v, out, d_out
