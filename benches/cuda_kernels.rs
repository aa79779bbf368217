//! Kernel benchmarks on the GPU: achieved TFLOP/s or GB/s and the fraction of the GPU's peak.
//! Prints one `RESULT|op|config|impl|ms|metric|value|peak%` line per case, which
//! `benches/gpu_suite.sh` joins with the PyTorch peers' lines into one table. Without a GPU it
//! prints why it skipped and exits 0.
//!
//! `cargo bench --bench cuda_kernels [-- FILTER]` (FILTER: a substring of the op name).

use std::time::Instant;

use atomrl::backend::cuda::{cuda_available, CudaBackend, CudaTensor, DType};
use atomrl::backend::{AttnShape, Backend, CausalAttn, Gemm, PagedAttn, SampleParams};

/// Dense bf16 tensor-core TFLOP/s and HBM GB/s of the GPUs we expect, by name.
fn peaks(name: &str) -> (f64, f64) {
    let n = name.to_ascii_uppercase();
    if n.contains("H200") {
        (989.0, 4800.0)
    } else if n.contains("H100") && n.contains("PCIE") {
        (756.0, 2000.0)
    } else if n.contains("H100") {
        (989.0, 3350.0)
    } else if n.contains("A100") {
        (312.0, if n.contains("80GB") { 2039.0 } else { 1555.0 })
    } else if n.contains("L40S") {
        (362.0, 864.0)
    } else {
        (f64::NAN, f64::NAN)
    }
}

struct Bench<'a> {
    g: &'a CudaBackend,
    tflops_peak: f64,
    gbs_peak: f64,
    filter: Option<String>,
}

impl Bench<'_> {
    fn wanted(&self, op: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| op.contains(f))
    }

    /// Median milliseconds of `f` over a few timed batches after a warm-up.
    fn time(&self, mut f: impl FnMut()) -> f64 {
        for _ in 0..3 {
            f();
        }
        self.g.synchronize().unwrap();
        let mut samples = Vec::new();
        for _ in 0..5 {
            let iters = 10;
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            self.g.synchronize().unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e3 / iters as f64);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        samples[samples.len() / 2]
    }

    fn report(&self, op: &str, config: &str, ms: f64, flops: Option<f64>, bytes: Option<f64>) {
        if let Some(fl) = flops {
            let t = fl / ms / 1e9;
            println!("RESULT|{op}|{config}|atomrl|{ms:.4}|TFLOP/s|{t:.1}|{:.0}%", 100.0 * t / self.tflops_peak);
        } else if let Some(b) = bytes {
            let gbs = b / ms / 1e6;
            println!("RESULT|{op}|{config}|atomrl|{ms:.4}|GB/s|{gbs:.0}|{:.0}%", 100.0 * gbs / self.gbs_peak);
        }
    }
}

fn rand_tensor(g: &CudaBackend, n: usize, seed: u64, scale: f32) -> CudaTensor {
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    g.from_f32(&v).unwrap()
}

fn attention_causal(b: &Bench) {
    let g = b.g;
    for hd in [64usize, 128] {
        let n_heads = 2048 / hd; // model width 2048
        let s = AttnShape { n_heads, n_kv_heads: n_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
        for seq in [512usize, 1024, 2048, 4096, 8192] {
            let batch = (16384 / seq).max(1);
            let tokens = batch * seq;
            let q = rand_tensor(g, tokens * s.q_dim(), 1, 1.0);
            let k = rand_tensor(g, tokens * s.kv_dim(), 2, 1.0);
            let v = rand_tensor(g, tokens * s.kv_dim(), 3, 1.0);
            let mut out = g.zeros(tokens * s.q_dim()).unwrap();
            let mut lse = g.zeros_f32(tokens * n_heads).unwrap();
            let cu: Vec<u32> = (0..=batch).map(|i| (i * seq) as u32).collect();
            let cu = g.index(&cu).unwrap();
            let p = CausalAttn { tokens, n_seqs: batch, shape: s, cu_seqlens: &cu };
            let ms = b.time(|| g.attention_causal(&mut out, &mut lse, &q, &k, &v, &p).unwrap());
            // two matmuls of 2*seq*seq*hd flops per head, half of them under the causal mask
            let flops = 4.0 * (seq * seq) as f64 * hd as f64 * n_heads as f64 * batch as f64 / 2.0;
            b.report("attention_causal", &format!("hd={hd} seq={seq} batch={batch} heads={n_heads}"), ms, Some(flops), None);
        }
    }
}

fn attention_paged(b: &Bench) {
    let g = b.g;
    let (n_heads, n_kv_heads, hd, block_size) = (32usize, 8usize, 128usize, 16usize);
    let s = AttnShape { n_heads, n_kv_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
    for (batch, ctx) in [(1usize, 4096usize), (16, 2048), (64, 2048), (256, 1024), (32, 8192)] {
        let max_blocks = ctx.div_ceil(block_size);
        let slots = batch * max_blocks * block_size;
        let kc = rand_tensor(g, slots * s.kv_dim(), 4, 1.0);
        let vc = rand_tensor(g, slots * s.kv_dim(), 5, 1.0);
        let tables: Vec<u32> = (0..(batch * max_blocks) as u32).collect();
        let positions: Vec<u32> = vec![(ctx - 1) as u32; batch];
        let seqs: Vec<u32> = (0..batch as u32).collect();
        let (gt, gp, gs) = (g.index(&tables).unwrap(), g.index(&positions).unwrap(), g.index(&seqs).unwrap());
        let q = rand_tensor(g, batch * s.q_dim(), 6, 1.0);
        let mut out = g.zeros(batch * s.q_dim()).unwrap();
        let p = PagedAttn { tokens: batch, shape: s, block_size, max_blocks, positions: &gp, token_seq: &gs, block_tables: &gt };
        let ms = b.time(|| g.attention_paged(&mut out, &q, &kc, &vc, &p).unwrap());
        let bytes = (2 * batch * ctx * s.kv_dim() * 2) as f64;
        b.report("attention_paged", &format!("hd={hd} heads={n_heads}/{n_kv_heads} batch={batch} ctx={ctx}"), ms, None, Some(bytes));
    }
}

fn sample(b: &Bench) {
    let g = b.g;
    let vocab = 151936usize;
    for batch in [1usize, 16, 64, 256] {
        let logits = {
            let t = rand_tensor(g, batch * vocab, 7, 8.0);
            let mut f = g.zeros_f32(batch * vocab).unwrap();
            g.cast(&mut f, &t).unwrap();
            f
        };
        let params: Vec<SampleParams> = (0..batch as u32).map(|i| SampleParams { temperature: 0.8, top_k: 0, top_p: 0.9, min_p: 0.0, seed: 1, stream: i, step: 0 }).collect();
        let ms = b.time(|| {
            g.sample(&logits, vocab, &params).unwrap();
        });
        // one read of the f32 logits is the floor any sampler pays
        b.report("sample_top_p", &format!("vocab={vocab} batch={batch}"), ms, None, Some((batch * vocab * 4) as f64));
    }
}

fn gemm(b: &Bench) {
    let g = b.g;
    for (m, n, k) in [(4096usize, 4096usize, 4096usize), (8192, 2048, 8192), (16, 151936, 2048)] {
        let a = rand_tensor(g, m * k, 8, 1.0);
        let w = rand_tensor(g, n * k, 9, 1.0);
        let mut out = g.zeros(m * n).unwrap();
        let ms = b.time(|| g.gemm(&mut out, &a, &w, Gemm::linear(m, n, k)).unwrap());
        b.report("gemm", &format!("m={m} n={n} k={k}"), ms, Some(2.0 * (m * n * k) as f64), None);
    }
}

fn memory_bound(b: &Bench) {
    let g = b.g;
    let (rows, dim) = (16384usize, 4096usize);
    let x = rand_tensor(g, rows * dim, 10, 2.0);
    let w = rand_tensor(g, dim, 11, 1.0);
    let mut out = g.zeros(rows * dim).unwrap();
    let ms = b.time(|| g.rms_norm(&mut out, &x, &w, rows, dim, 1e-6).unwrap());
    b.report("rms_norm", &format!("rows={rows} dim={dim}"), ms, None, Some((2 * rows * dim * 2) as f64));
    let up = rand_tensor(g, rows * dim, 12, 2.0);
    let ms = b.time(|| g.swiglu(&mut out, &x, &up).unwrap());
    b.report("swiglu", &format!("n={}", rows * dim), ms, None, Some((3 * rows * dim * 2) as f64));
    let f = g.zeros_f32(rows * dim).unwrap();
    let mut h = g.zeros(rows * dim).unwrap();
    let ms = b.time(|| g.cast(&mut h, &f).unwrap());
    b.report("cast_f32_to_bf16", &format!("n={}", rows * dim), ms, None, Some((6 * rows * dim) as f64));
    let _ = DType::Bf16;
}

fn main() {
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        // scripts/gpu-check.sh sets this: there, no GPU is a failure, not a skip.
        if std::env::var_os("ATOMRL_REQUIRE_GPU").is_some() {
            std::process::exit(1);
        }
        return;
    }
    let g = CudaBackend::new(0).expect("starting the CUDA backend");
    let (tflops_peak, gbs_peak) = peaks(g.device_name());
    println!("device: {} (sm_{}{}, {} SMs), peak {tflops_peak} bf16 TFLOP/s, {gbs_peak} GB/s", g.device_name(), g.compute_capability().0, g.compute_capability().1, g.sm_count());
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let b = Bench { g: &g, tflops_peak, gbs_peak, filter };
    type Case = (&'static str, fn(&Bench));
    let all: [Case; 5] = [("attention_causal", attention_causal), ("attention_paged", attention_paged), ("sample", sample), ("gemm", gemm), ("memory_bound", memory_bound)];
    for (op, f) in all {
        if b.wanted(op) {
            f(&b);
        }
    }
}
