"""Peer for train_step: one GRPO training step of a Qwen2.5-0.5B-shaped model with random weights
in eager PyTorch, as TRL runs it on one GPU: the Qwen2 architecture written out as transformers'
modeling_qwen2 has it (RMSNorm, rotary embeddings, grouped-query attention through SDPA, SwiGLU,
tied head), f32 weights under bf16 autocast, the whole logits, a selective log-softmax of the
completion tokens, the clipped objective, backward, fused AdamW. 16 sequences of 1024 tokens, the
loss on the last 768, as benches/cuda_train_step.rs. Generation is not included (atomrl's
"generation excluded" line)."""
from common import peaks, require_gpu, time_ms  # first: exits cleanly without torch
import torch
import torch.nn.functional as F
from torch import nn

require_gpu()
VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, THETA = 151936, 896, 4864, 24, 14, 2, 1e6
HEAD_DIM = HIDDEN // HEADS
n_seqs, length, prompt = 16, 1024, 256


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_norm, self.post_norm = RMSNorm(HIDDEN), RMSNorm(HIDDEN)
        self.q = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=True)
        self.k = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.v = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.o = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.gate, self.up = nn.Linear(HIDDEN, INTER, bias=False), nn.Linear(HIDDEN, INTER, bias=False)
        self.down = nn.Linear(INTER, HIDDEN, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.input_norm(x)
        q = self.q(h).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k(h).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v(h).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.norm = RMSNorm(HIDDEN)
        inv = 1.0 / THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM)
        ang = torch.outer(torch.arange(length, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids):
        x = self.embed(ids)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x) @ self.embed.weight.T  # tied head


model = Model().cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
ids = (torch.arange(n_seqs * length, device="cuda") * 7919 % VOCAB).view(n_seqs, length)
adv = torch.where(torch.arange(n_seqs, device="cuda") % 2 == 0, 1.0, -1.0)[:, None]


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids)[:, prompt - 1:-1]
    # TRL's selective log-softmax: row by row in f32
    logp = torch.stack([torch.log_softmax(row.float(), -1).gather(-1, t[:, None]).squeeze(-1) for row, t in zip(logits, ids[:, prompt:])])
    ratio = torch.exp(logp - logp.detach())
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.28) * adv).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


try:
    ms = time_ms(step, warmup=1, iters=1, reps=3)
except torch.OutOfMemoryError:
    print("RESULT|train_step|qwen2.5-0.5b shape, 16x1024 tokens, recompute Never, generation excluded|torch-eager-trl|0|tok/s|out of memory|-")
    raise SystemExit(0)
params = sum(p.numel() for p in model.parameters())
tokens = n_seqs * length
attn = 12.0 * length * length / 2 * HEAD_DIM * HEADS * LAYERS * n_seqs
flops = 6.0 * params * tokens + attn
mfu = 100 * flops / ms / 1e9 / peaks()[0]
config = f"qwen2.5-0.5b shape, {n_seqs}x{length} tokens, recompute Never, generation excluded"
print(f"RESULT|train_step|{config}|torch-eager-trl|{ms:.1f}|tok/s|{tokens / ms * 1e3:.0f}|{mfu:.0f}%", flush=True)
print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
