"""Peer for sample: the sort + cumsum + multinomial top-p sampler most PyTorch stacks use
(temperature 0.8, top_p 0.9), vocab 151936, f32 logits, batch 1-256. Bytes = one read of the
logits, as for atomrl's line."""
from common import report, require_gpu, time_ms  # first: exits cleanly without torch
import torch

require_gpu()
vocab = 151936


def sample_top_p(logits, temperature=0.8, top_p=0.9):
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p, 0.0)
    choice = torch.multinomial(sorted_p, 1)
    tok = torch.gather(idx, -1, choice)
    logp = torch.log(torch.gather(probs, -1, tok))
    return tok, logp


for batch in (1, 16, 64, 256):
    logits = torch.randn(batch, vocab, device="cuda", dtype=torch.float32) * 8
    ms = time_ms(lambda: sample_top_p(logits))
    report("sample_top_p", f"vocab={vocab} batch={batch}", "torch-sort-cumsum-multinomial", ms, nbytes=batch * vocab * 4)
