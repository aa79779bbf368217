"""Peer for benches/generate.rs: Hugging Face transformers generating with the same SmolLM2 weights
on the CPU, f32, eager attention, greedy, prompt 64 tokens (the same ids), exactly 128 new tokens,
at batch 1 and 8; best of three after a warm-up. Prints `batch seconds tokens/s` rows."""
import sys
import time
from pathlib import Path

try:
    import torch
    from transformers import AutoModelForCausalLM
except ImportError:
    print("skipped: torch and transformers are not installed (pip install torch transformers)")
    sys.exit(0)

model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/smollm2/hf")
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
print(f"{'batch':>6} {'seconds':>10} {'tokens/s':>12}")
for batch in (1, 8):
    ids = torch.tensor([[100 + (j * 31 + i * 7) % 40000 for j in range(64)] for i in range(batch)])
    run = lambda: model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=128,
                                 min_new_tokens=128, pad_token_id=0)
    with torch.inference_mode():
        run()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out = run()
            best = min(best, time.perf_counter() - t)
    assert out.shape[1] == 64 + 128
    print(f"{batch:>6} {best:>10.2f} {batch * 128 / best:>12.1f}", flush=True)
