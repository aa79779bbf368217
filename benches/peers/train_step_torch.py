"""Peer for train_step: one GRPO training step of a Qwen2.5-0.5B-shaped model with random weights
in PyTorch as TRL runs it on one GPU: transformers' Qwen2ForCausalLM (f32 weights, bf16 autocast,
SDPA attention), the whole logits, a selective log-softmax of the completion tokens, the clipped
objective, backward, fused AdamW. 16 sequences of 1024 tokens, the loss on the last 768, as
benches/cuda_train_step.rs. Generation is not included (atomrl's "generation excluded" line)."""
from common import peaks, require_gpu, time_ms  # first: exits cleanly without torch
import torch

require_gpu()
try:
    from transformers import Qwen2Config, Qwen2ForCausalLM
except ImportError:
    print("skipped: transformers is not installed (pip install transformers)")
    raise SystemExit(0)

n_seqs, length, prompt = 16, 1024, 256
cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768, tie_word_embeddings=True,
                  attn_implementation="sdpa")
model = Qwen2ForCausalLM(cfg).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
ids = (torch.arange(n_seqs * length, device="cuda") * 7919 % cfg.vocab_size).view(n_seqs, length)
adv = torch.where(torch.arange(n_seqs, device="cuda") % 2 == 0, 1.0, -1.0)[:, None]


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids).logits[:, prompt - 1:-1]
    logp = torch.stack([torch.log_softmax(row.float(), -1).gather(-1, t[:, None]).squeeze(-1) for row, t in zip(logits, ids[:, prompt:])])
    ratio = torch.exp(logp - logp.detach())
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.28) * adv).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


ms = time_ms(step, warmup=1, iters=1, reps=3)
params = sum(p.numel() for p in model.parameters())
tokens = n_seqs * length
attn = 12.0 * length * length / 2 * (cfg.hidden_size // cfg.num_attention_heads) * cfg.num_attention_heads * cfg.num_hidden_layers * n_seqs
flops = 6.0 * params * tokens + attn
mfu = 100 * flops / ms / 1e9 / peaks()[0]
config = f"qwen2.5-0.5b shape, {n_seqs}x{length} tokens, recompute Never, generation excluded"
print(f"RESULT|train_step|{config}|torch-transformers-trl|{ms:.1f}|tok/s|{tokens / ms * 1e3:.0f}|{mfu:.0f}%", flush=True)
print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
