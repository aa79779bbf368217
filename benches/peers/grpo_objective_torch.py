"""Peer for grpo_objective: TRL's eager formulation in PyTorch. The whole [tokens, vocab] logits
from the output head (bf16), a selective log-softmax in f32 for the sampled tokens, the clipped
GRPO objective (on-policy: old log-probs detached), token-mean, and its backward into the hidden
states and the head. Same shapes as benches/cuda_kernels.rs (hidden 1536, vocab 151936); also
reports the peak memory PyTorch allocates for it beyond the inputs, and out-of-memory as such."""
from common import report, require_gpu, time_ms  # first: exits cleanly without torch
import torch

require_gpu()
dim, vocab = 1536, 151936


def selective_log_softmax(logits, index):
    # TRL: log_softmax gathered at the targets, row by row in f32 for bf16 logits
    out = []
    for row, idx in zip(logits, index):
        lp = torch.log_softmax(row.float(), dim=-1)
        out.append(lp.gather(-1, idx.unsqueeze(-1)).squeeze(-1))
    return torch.stack(out)


def objective(hidden, head, targets, advantages, eps_low=0.2, eps_high=0.28):
    logits = hidden @ head.T
    logp = selective_log_softmax(logits.unsqueeze(0), targets.unsqueeze(0)).squeeze(0)
    ratio = torch.exp(logp - logp.detach())
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * advantages, clipped * advantages).mean()
    loss.backward()


for tokens in (8192, 16384, 32768):
    config_base = f"tokens={tokens} vocab={vocab} hidden={dim}"
    hidden = (torch.randn(tokens, dim, device="cuda", dtype=torch.bfloat16)).requires_grad_()
    head = (torch.randn(vocab, dim, device="cuda", dtype=torch.bfloat16) * 0.05).requires_grad_()
    targets = torch.arange(tokens, device="cuda") * 7919 % vocab
    advantages = torch.where(torch.arange(tokens, device="cuda") % 3 == 0, -1.0, 0.5)
    flops = 3 * 2.0 * tokens * vocab * dim
    try:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        objective(hidden, head, targets, advantages)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ms = time_ms(lambda: objective(hidden, head, targets, advantages))
    except torch.OutOfMemoryError:
        print(f"RESULT|grpo_objective_mem|{config_base}|trl-eager|0|MiB|out of memory|-", flush=True)
        continue
    finally:
        hidden.grad = None
        head.grad = None
    report("grpo_objective", config_base, "trl-eager", ms, flops=flops)
    print(f"RESULT|grpo_objective_mem|{config_base}|trl-eager|0|MiB|{peak / 2**20:.0f}|-", flush=True)
