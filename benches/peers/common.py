"""Shared by the peer benchmarks: GPU peaks, timing with CUDA events, the RESULT line format that
benches/gpu_suite.sh joins with atomrl's own lines."""
import sys

try:
    import torch
except ImportError:
    print("skipped: PyTorch is not installed (pip install torch)")
    sys.exit(0)


def peaks():
    name = torch.cuda.get_device_name().upper()
    if "H200" in name:
        return 989.0, 4800.0
    if "H100" in name and "PCIE" in name:
        return 756.0, 2000.0
    if "H100" in name:
        return 989.0, 3350.0
    if "A100" in name:
        return 312.0, 2039.0 if "80GB" in name else 1555.0
    if "L40S" in name:
        return 362.0, 864.0
    return float("nan"), float("nan")


def require_gpu():
    if not torch.cuda.is_available():
        print("skipped: no CUDA device visible to PyTorch")
        sys.exit(0)


def time_ms(fn, warmup=3, iters=10, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / iters)
    samples.sort()
    return samples[len(samples) // 2]


def report(op, config, impl, ms, flops=None, nbytes=None):
    tf_peak, bw_peak = peaks()
    if flops is not None:
        t = flops / ms / 1e9
        print(f"RESULT|{op}|{config}|{impl}|{ms:.4f}|TFLOP/s|{t:.1f}|{100 * t / tf_peak:.0f}%", flush=True)
    else:
        g = nbytes / ms / 1e6
        print(f"RESULT|{op}|{config}|{impl}|{ms:.4f}|GB/s|{g:.0f}|{100 * g / bw_peak:.0f}%", flush=True)
