//! Kernel benchmarks on the GPU: achieved TFLOP/s or GB/s and the fraction of the GPU's peak.
//! Prints one `RESULT|op|config|impl|ms|metric|value|peak%` line per case, which
//! `benches/gpu_suite.sh` joins with the PyTorch peers' lines into one table. Without a GPU it
//! prints why it skipped and exits 0.
//!
//! `cargo bench --bench cuda_kernels [-- FILTER]` (FILTER: a substring of the op name).
//! `ATOMRL_BENCH_SMOKE=1` runs every case once at toy sizes instead: a check that the cases run
//! (the test command does it on the CPU emulator), not a measurement.

mod common;

use std::time::Instant;

use atomrl::backend::cuda::{cuda_available, CudaBackend, CudaTensor, DType};
use atomrl::backend::{AttnShape, Backend, CausalAttn, Gemm, KlEstimator, LossGrads, LossRows, PagedAttn, PolicyLoss, PolicyLossParams, SampleParams, LOSS_STATS};

struct Bench<'a> {
    g: &'a CudaBackend,
    tflops_peak: f64,
    gbs_peak: f64,
    filter: Option<String>,
    /// Toy sizes, one run each: checks that the cases run, measures nothing.
    smoke: bool,
}

impl Bench<'_> {
    fn wanted(&self, op: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| op.contains(f))
    }

    /// `full` normally, `smoke` in smoke mode.
    fn sizes<T>(&self, full: Vec<T>, smoke: Vec<T>) -> Vec<T> {
        if self.smoke {
            smoke
        } else {
            full
        }
    }

    /// Median milliseconds of `f` over a few timed batches after a warm-up (one run in smoke mode).
    fn time(&self, mut f: impl FnMut()) -> f64 {
        if self.smoke {
            f();
            self.g.synchronize().unwrap();
            return f64::NAN;
        }
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
        self.report_as(op, config, "atomrl", ms, flops, bytes);
    }

    fn report_as(&self, op: &str, config: &str, imp: &str, ms: f64, flops: Option<f64>, bytes: Option<f64>) {
        if self.smoke {
            println!("smoke: {op} {config} {imp} ran");
        } else if let Some(fl) = flops {
            let t = fl / ms / 1e9;
            println!("RESULT|{op}|{config}|{imp}|{ms:.4}|TFLOP/s|{t:.1}|{:.0}%", 100.0 * t / self.tflops_peak);
        } else if let Some(b) = bytes {
            let gbs = b / ms / 1e6;
            println!("RESULT|{op}|{config}|{imp}|{ms:.4}|GB/s|{gbs:.0}|{:.0}%", 100.0 * gbs / self.gbs_peak);
        }
    }

    /// A memory figure (MiB) as a table row of its own.
    fn report_memory(&self, op: &str, config: &str, imp: &str, bytes: usize) {
        if !self.smoke {
            println!("RESULT|{op}|{config}|{imp}|0|MiB|{:.0}|-", bytes as f64 / (1u64 << 20) as f64);
        }
    }
}

fn rand_tensor(g: &CudaBackend, n: usize, seed: u64, scale: f32) -> CudaTensor {
    let mut rng = common::Lcg(seed);
    let v: Vec<f32> = (0..n).map(|_| rng.next() * scale).collect();
    g.from_f32(&v).unwrap()
}

/// Head dims and sequence lengths of the attention cases (model width 2048, 16k tokens a call).
fn attention_shapes(b: &Bench) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for hd in [64usize, 128] {
        for seq in b.sizes(vec![512usize, 1024, 2048, 4096, 8192], vec![70]) {
            let batch = if b.smoke { 2 } else { (16384 / seq).max(1) };
            v.push((hd, seq, batch));
        }
    }
    v
}

/// Packed causal attention inputs of one shape: q, k, v (bf16), cu_seqlens.
struct AttnCase {
    s: AttnShape,
    seq: usize,
    batch: usize,
    q: CudaTensor,
    k: CudaTensor,
    v: CudaTensor,
    cu: atomrl::backend::cuda::CudaIndex,
}

impl AttnCase {
    fn new(b: &Bench, hd: usize, seq: usize, batch: usize) -> Self {
        let n_heads = if b.smoke { 2 } else { 2048 / hd };
        let s = AttnShape { n_heads, n_kv_heads: n_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
        let tokens = batch * seq;
        let cu: Vec<u32> = (0..=batch).map(|i| (i * seq) as u32).collect();
        let (q, k, v) = (rand_tensor(b.g, tokens * s.q_dim(), 1, 1.0), rand_tensor(b.g, tokens * s.kv_dim(), 2, 1.0), rand_tensor(b.g, tokens * s.kv_dim(), 3, 1.0));
        AttnCase { s, seq, batch, q, k, v, cu: b.g.index(&cu).unwrap() }
    }
    fn tokens(&self) -> usize {
        self.seq * self.batch
    }
    fn params(&self) -> CausalAttn<'_, CudaBackend> {
        CausalAttn { tokens: self.tokens(), n_seqs: self.batch, shape: self.s, cu_seqlens: &self.cu }
    }
    fn config(&self) -> String {
        format!("hd={} seq={} batch={} heads={}", self.s.head_dim, self.seq, self.batch, self.s.n_heads)
    }
    /// Flops of one seq x seq x head_dim product per head, half under the causal mask.
    fn product_flops(&self) -> f64 {
        2.0 * (self.seq * self.seq) as f64 * self.s.head_dim as f64 * self.s.n_heads as f64 * self.batch as f64 / 2.0
    }
}

fn attention_causal(b: &Bench) {
    let g = b.g;
    for (hd, seq, batch) in attention_shapes(b) {
        let c = AttnCase::new(b, hd, seq, batch);
        let mut out = g.zeros(c.tokens() * c.s.q_dim()).unwrap();
        let mut lse = g.zeros_f32(c.tokens() * c.s.n_heads).unwrap();
        let ms = b.time(|| g.attention_causal(&mut out, &mut lse, &c.q, &c.k, &c.v, &c.params()).unwrap());
        // two products: S = QK^T and O = PV
        b.report("attention_causal", &c.config(), ms, Some(2.0 * c.product_flops()), None);
    }
}

fn attention_backward(b: &Bench) {
    let g = b.g;
    for (hd, seq, batch) in attention_shapes(b) {
        let c = AttnCase::new(b, hd, seq, batch);
        let n = c.tokens() * c.s.q_dim();
        let (mut out, mut lse) = (g.zeros(n).unwrap(), g.zeros_f32(c.tokens() * c.s.n_heads).unwrap());
        g.attention_causal(&mut out, &mut lse, &c.q, &c.k, &c.v, &c.params()).unwrap();
        let d_out = rand_tensor(g, n, 4, 1.0);
        // bf16 gradients, as the trainer's activation gradients
        let (mut dq, mut dk, mut dv) = (g.zeros(n).unwrap(), g.zeros(c.tokens() * c.s.kv_dim()).unwrap(), g.zeros(c.tokens() * c.s.kv_dim()).unwrap());
        let ms = b.time(|| g.attention_causal_backward(&mut dq, &mut dk, &mut dv, &d_out, &c.q, &c.k, &c.v, &out, &lse, &c.params()).unwrap());
        // the usual count, as for SDPA's backward: five products (S, dP, dV, dK, dQ)
        b.report("attention_backward", &c.config(), ms, Some(5.0 * c.product_flops()), None);
    }
}

/// The fused GRPO objective (policy_loss with gradients) at a Qwen2.5-1.5B head (hidden 1536,
/// vocab 151936), against the three bare head products it contains, and the scratch it takes.
fn grpo_objective(b: &Bench) {
    let g = b.g;
    let (dim, vocab) = if b.smoke { (64usize, 1000usize) } else { (1536, 151936) };
    // the trainer's chunk (about 16M logits), and at the largest size a bigger one
    let default_chunk = atomrl::rl::objective::default_chunk(vocab);
    let cases = b.sizes(vec![(8192usize, default_chunk), (16384, default_chunk), (32768, default_chunk), (32768, 1024)], vec![(40, 16)]);
    for (tokens, chunk) in cases {
        let imp = if chunk == default_chunk || b.smoke { "atomrl".to_string() } else { format!("atomrl, chunk {chunk}") };
        let hidden = rand_tensor(g, tokens * dim, 21, 1.0);
        let head = rand_tensor(g, vocab * dim, 22, 0.05);
        let targets: Vec<u32> = (0..tokens).map(|i| ((i * 7919) % vocab) as u32).collect();
        let targets = g.index(&targets).unwrap();
        let weights = g.from_f32_exact(&vec![1.0 / tokens as f32; tokens]).unwrap();
        let advantages = g.from_f32_exact(&(0..tokens).map(|i| if i % 3 == 0 { -1.0 } else { 0.5 }).collect::<Vec<f32>>()).unwrap();
        let (mut logp, mut stats) = (g.zeros_f32(tokens).unwrap(), g.zeros_f32(LOSS_STATS).unwrap());
        let (mut d_hidden, mut d_head) = (g.zeros(tokens * dim).unwrap(), g.zeros_f32(vocab * dim).unwrap());
        let params = PolicyLossParams { temperature: 1.0, clip_low: 0.2, clip_high: 0.28, dual_clip: None, kl_coef: 0.0, kl_estimator: KlEstimator::K3, tis_cap: None };
        let before = g.pool_bytes();
        let mut run = || {
            let rows = LossRows { rows: tokens, dim, vocab, chunk, hidden: &hidden, head: &head, targets: &targets, weights: &weights };
            let pl = PolicyLoss { rows, advantages: &advantages, old_logp: None, ref_logp: None, rollout_logp: None, params };
            g.policy_loss(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut d_hidden, d_head: &mut d_head }), &pl).unwrap();
        };
        run();
        g.synchronize().unwrap();
        let scratch = g.pool_bytes() - before;
        let ms = b.time(run);
        let config = format!("tokens={tokens} vocab={vocab} hidden={dim}");
        let flops = 3.0 * 2.0 * (tokens * vocab * dim) as f64;
        b.report_as("grpo_objective", &config, &imp, ms, Some(flops), None);
        b.report_memory("grpo_objective_mem", &config, &imp, scratch);
        // The same three products on whole [tokens, vocab] matrices: logits, d_hidden, d_head.
        if (chunk == default_chunk || b.smoke) && tokens * vocab * 6 < (40usize << 30) {
            let mut logits = g.zeros_f32(tokens * vocab).unwrap();
            let d_logits = g.zeros(tokens * vocab).unwrap();
            let mut dh_f32 = g.zeros(tokens * dim).unwrap();
            let ms = b.time(|| {
                g.gemm(&mut logits, &hidden, &head, Gemm::linear(tokens, vocab, dim)).unwrap();
                g.gemm(&mut dh_f32, &d_logits, &head, Gemm { m: tokens, n: dim, k: vocab, trans_a: false, trans_b: false, accumulate: false }).unwrap();
                g.gemm(&mut d_head, &d_logits, &hidden, Gemm { m: vocab, n: dim, k: tokens, trans_a: true, trans_b: false, accumulate: true }).unwrap();
            });
            b.report_as("grpo_objective", &config, "head products alone", ms, Some(flops), None);
        }
    }
}

fn attention_paged(b: &Bench) {
    let g = b.g;
    let (n_heads, n_kv_heads, hd, block_size) = (32usize, 8usize, 128usize, 16usize);
    let s = AttnShape { n_heads, n_kv_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
    for (batch, ctx) in b.sizes(vec![(1usize, 4096usize), (16, 2048), (64, 2048), (256, 1024), (32, 8192)], vec![(2, 300)]) {
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
    for batch in b.sizes(vec![1usize, 16, 64, 256], vec![2]) {
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
    for (m, n, k) in b.sizes(vec![(4096usize, 4096usize, 4096usize), (8192, 2048, 8192), (16, 151936, 2048)], vec![(16, 40, 24)]) {
        let a = rand_tensor(g, m * k, 8, 1.0);
        let w = rand_tensor(g, n * k, 9, 1.0);
        let mut out = g.zeros(m * n).unwrap();
        let ms = b.time(|| g.gemm(&mut out, &a, &w, Gemm::linear(m, n, k)).unwrap());
        b.report("gemm", &format!("m={m} n={n} k={k}"), ms, Some(2.0 * (m * n * k) as f64), None);
    }
}

fn memory_bound(b: &Bench) {
    let g = b.g;
    let (rows, dim) = if b.smoke { (4usize, 256usize) } else { (16384, 4096) };
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
    let (tflops_peak, gbs_peak) = common::gpu_peaks(g.device_name());
    println!("device: {} (sm_{}{}, {} SMs), peak {tflops_peak} bf16 TFLOP/s, {gbs_peak} GB/s", g.device_name(), g.compute_capability().0, g.compute_capability().1, g.sm_count());
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let smoke = std::env::var_os("ATOMRL_BENCH_SMOKE").is_some();
    let b = Bench { g: &g, tflops_peak, gbs_peak, filter, smoke };
    type Case = (&'static str, fn(&Bench));
    let all: [Case; 7] = [
        ("attention_causal", attention_causal),
        ("attention_backward", attention_backward),
        ("attention_paged", attention_paged),
        ("sample", sample),
        ("grpo_objective", grpo_objective),
        ("gemm", gemm),
        ("memory_bound", memory_bound),
    ];
    for (op, f) in all {
        if b.wanted(op) {
            f(&b);
        }
    }
}
