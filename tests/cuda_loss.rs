//! The CUDA loss ops (`policy_loss`, `cross_entropy`) against the CPU reference on random
//! inputs of several shapes: odd vocabularies, chunks that do not divide the active rows, rows
//! of weight 0, advantages of both signs, with and without old / reference / rollout log-probs,
//! dual clip, each KL estimator, truncated importance weights. Without a GPU (or without
//! kernels in this build) each test prints why it is skipped and passes.
//!
//! Hidden states and the head are rounded to bf16 before either backend sees them (the GPU
//! reads them as bf16). The checks, and their tolerances:
//!
//! - **log-probs** against the CPU's. `logp = z_t - logsumexp(z)` has gradient `onehot - p`
//!   (1-norm at most 2) with respect to the logits, so it moves by at most twice the largest
//!   logit error; the logits are f32 sums of `dim` bf16 products, and the sums over the
//!   vocabulary f32 sums, both in another order than the CPU's: [`REDUCE_RTOL`] relative to the
//!   largest logit. Inactive rows must be exactly 0.
//! - **statistics** against the CPU objective (`cpu::loss::policy_token`) applied to the GPU's
//!   own log-probs, so that they measure the kernel's objective and not the log-prob error
//!   twice: counts exactly, ratio extremes within an f32 rounding of `exp`, and sums within
//!   [`REDUCE_RTOL`] of the sum of the magnitudes of their terms (atomic adds in any order).
//!   The entropy sum is compared with the CPU's (all its terms are positive).
//! - **gradients** against the CPU's. The kernel rounds `dL/dlogits` to bf16 (the cuBLAS
//!   operand type) before the two products, a relative error of at most 2⁻⁹ per term; summed
//!   over the vocabulary (`d_hidden`) or the rows (`d_head`) with independent signs, that stays
//!   below [`BF16_ULP`] times the largest gradient element (a NumPy model of the rounding on
//!   these shapes gives at most a third of that).


#[macro_use]
mod gpu_support;

use gpu_support::{max_abs, Rng};
use atomrl::backend::cpu::loss::{policy_token, PolicyToken};
use atomrl::backend::cpu::Cpu;
use atomrl::backend::cuda::{CudaBackend, CudaTensor, DType};
use atomrl::backend::{Backend, CrossEntropy, Gemm, KlEstimator, LossGrads, LossRows, LossStat, PolicyLoss, PolicyLossParams, LOSS_STATS};

/// Spacing of bf16 numbers in [1, 2).
const BF16_ULP: f32 = 1.0 / 128.0;
/// Relative error of f32 sums taken in another order than the CPU's (as in cuda_parity.rs).
const REDUCE_RTOL: f32 = 1e-4;
/// Ratio extremes: `exp` in double rounded to f32 on the GPU, f32 `exp` on the CPU.
const RATIO_RTOL: f32 = 4.0 * f32::EPSILON;

// ---- set-up (as in cuda_parity.rs)



impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.unit())
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn bf16_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| bf16(self.uniform(-scale, scale))).collect()
    }
}

fn bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn put(g: &CudaBackend, v: &[f32], dtype: DType) -> CudaTensor {
    g.from_f32_as(v, dtype).unwrap()
}

fn down(g: &CudaBackend, t: &CudaTensor) -> Vec<f32> {
    g.synchronize().unwrap();
    g.to_f32(t).unwrap()
}

/// `|got - want| <= atol + rtol·|want|` element by element.
fn check(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let allowed = atol + rtol * w.abs();
        assert!((g - w).abs() <= allowed, "{what}: element {i}: gpu {g} cpu {w} (|diff| {} > {allowed})", (g - w).abs());
    }
}

// ---- inputs

/// (rows, dim, vocab, chunk): odd vocabularies, chunks that leave a partial last chunk.
const SHAPES: [(usize, usize, usize, usize); 5] = [(1, 8, 5, 4), (7, 33, 97, 3), (40, 64, 1000, 16), (19, 128, 4099, 64), (6, 256, 32003, 4)];

/// One problem on the host: every tensor both backends read.
struct Problem {
    rows: usize,
    dim: usize,
    vocab: usize,
    chunk: usize,
    hidden: Vec<f32>,
    head: Vec<f32>,
    targets: Vec<u32>,
    weights: Vec<f32>,
    advantages: Vec<f32>,
    /// On-policy log-probs of the CPU, around which old, reference and rollout ones are drawn.
    logp: Vec<f32>,
    /// Largest |logit / temperature| over the active rows.
    max_z: f32,
}

impl Problem {
    fn new(rng: &mut Rng, (rows, dim, vocab, chunk): (usize, usize, usize, usize), temperature: f32) -> Self {
        let hidden = rng.bf16_vec(rows * dim, 1.0);
        // logits of standard deviation about 2
        let head = rng.bf16_vec(vocab * dim, 6.0 / (dim as f32).sqrt());
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        // about a quarter of the rows inactive (row 0 always active so no case is empty)
        let weights: Vec<f32> = (0..rows).map(|r| if r > 0 && rng.below(4) == 0 { 0.0 } else { rng.uniform(0.1, 1.0) / rows as f32 }).collect();
        let advantages: Vec<f32> = (0..rows).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let mut logits = vec![0f32; rows * vocab];
        Cpu.gemm(&mut logits, &hidden, &head, Gemm::linear(rows, vocab, dim)).unwrap();
        let max_z = (0..rows).filter(|&r| weights[r] != 0.0).map(|r| max_abs(&logits[r * vocab..(r + 1) * vocab])).fold(0.0, f32::max) / temperature;
        let mut p = Problem { rows, dim, vocab, chunk, hidden, head, targets, weights, advantages, logp: Vec::new(), max_z };
        let cfg = Config { params: params(temperature), old: false, reference: false, rollout: false };
        let none = vec![0f32; rows];
        p.logp = run_cpu(&p, &cfg, [&none, &none, &none], false).logp;
        p
    }

    /// `self.logp` plus uniform noise in `[-spread, spread]`.
    fn near_logp(&self, rng: &mut Rng, spread: f32) -> Vec<f32> {
        self.logp.iter().map(|&l| l + rng.uniform(-spread, spread)).collect()
    }

    fn logp_tol(&self) -> f32 {
        2.0 * REDUCE_RTOL * (1.0 + self.max_z)
    }
}

fn params(temperature: f32) -> PolicyLossParams {
    PolicyLossParams { temperature, clip_low: 0.2, clip_high: 0.2, dual_clip: None, kl_coef: 0.0, kl_estimator: KlEstimator::K3, tis_cap: None }
}

/// Which optional inputs a case passes.
struct Config {
    params: PolicyLossParams,
    old: bool,
    reference: bool,
    rollout: bool,
}

/// What a loss op wrote, on the host.
struct Outputs {
    logp: Vec<f32>,
    stats: Vec<f32>,
    d_hidden: Vec<f32>,
    d_head: Vec<f32>,
}

fn run_cpu(p: &Problem, c: &Config, logps: [&Vec<f32>; 3], grads: bool) -> Outputs {
    let [old, reference, rollout] = logps;
    let (mut logp, mut stats) = (vec![0f32; p.rows], vec![0f32; LOSS_STATS]);
    let (mut dh, mut dw) = (vec![0f32; p.rows * p.dim], vec![0f32; p.vocab * p.dim]);
    let rows = LossRows { rows: p.rows, dim: p.dim, vocab: p.vocab, chunk: p.chunk, hidden: &p.hidden, head: &p.head, targets: &p.targets, weights: &p.weights };
    let pl = PolicyLoss { rows, advantages: &p.advantages, old_logp: c.old.then_some(old), ref_logp: c.reference.then_some(reference), rollout_logp: c.rollout.then_some(rollout), params: c.params };
    let g = grads.then_some(LossGrads { d_hidden: &mut dh, d_head: &mut dw });
    Cpu.policy_loss(&mut logp, &mut stats, g, &pl).unwrap();
    Outputs { logp, stats, d_hidden: dh, d_head: dw }
}

/// How a GPU run stores its tensors: the per-row inputs, and the outputs.
#[derive(Clone, Copy)]
struct Storage {
    inputs: DType,
    outputs: DType,
}

const F32: Storage = Storage { inputs: DType::F32, outputs: DType::F32 };

/// Runs the GPU op: `cross` picks cross-entropy (with `c.params.temperature`), else the policy
/// loss. The outputs start as garbage (to check they are overwritten), `d_head` as `d_head0`.
#[allow(clippy::too_many_arguments)]
fn run_gpu(g: &CudaBackend, p: &Problem, c: &Config, logps: [&Vec<f32>; 3], st: Storage, grads: bool, d_head0: &[f32], cross: bool) -> Outputs {
    let (hidden, head) = (put(g, &p.hidden, DType::Bf16), put(g, &p.head, DType::Bf16));
    let targets = g.index(&p.targets).unwrap();
    let input = |v: &[f32]| put(g, v, st.inputs);
    let (weights, advantages) = (input(&p.weights), input(&p.advantages));
    let [old, reference, rollout] = logps.map(|v| input(v));
    let mut logp = put(g, &vec![7.0; p.rows], st.outputs);
    let mut stats = put(g, &[7.0; LOSS_STATS], st.outputs);
    let mut dh = put(g, &vec![7.0; p.rows * p.dim], st.outputs);
    let mut dw = put(g, d_head0, st.outputs);
    let rows = LossRows { rows: p.rows, dim: p.dim, vocab: p.vocab, chunk: p.chunk, hidden: &hidden, head: &head, targets: &targets, weights: &weights };
    let gr = grads.then_some(LossGrads { d_hidden: &mut dh, d_head: &mut dw });
    if cross {
        g.cross_entropy(&mut logp, &mut stats, gr, &CrossEntropy { rows, temperature: c.params.temperature }).unwrap();
    } else {
        let pl = PolicyLoss { rows, advantages: &advantages, old_logp: c.old.then_some(&old), ref_logp: c.reference.then_some(&reference), rollout_logp: c.rollout.then_some(&rollout), params: c.params };
        g.policy_loss(&mut logp, &mut stats, gr, &pl).unwrap();
    }
    Outputs { logp: down(g, &logp), stats: down(g, &stats), d_hidden: down(g, &dh), d_head: down(g, &dw) }
}

/// What the CPU objective gives for the GPU's log-probs: the statistics, and per slot the sum
/// of the magnitudes of the terms (the scale of the summation error).
fn objective_stats(p: &Problem, c: &Config, logp: &[f32], logps: [&Vec<f32>; 3]) -> (Vec<f32>, Vec<f32>) {
    let [old, reference, rollout] = logps;
    let (min, max) = (LossStat::RatioMin as usize, LossStat::RatioMax as usize);
    let (mut sum, mut mag) = (vec![0f32; LOSS_STATS], vec![0f32; LOSS_STATS]);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for r in (0..p.rows).filter(|&r| p.weights[r] != 0.0) {
        let mut row = vec![0f32; LOSS_STATS];
        row[min] = f32::INFINITY;
        row[max] = f32::NEG_INFINITY;
        let t = PolicyToken { weight: p.weights[r], advantage: p.advantages[r], old_logp: c.old.then(|| old[r]), ref_logp: c.reference.then(|| reference[r]), rollout_logp: c.rollout.then(|| rollout[r]) };
        let l = policy_token(logp[r], &t, &c.params, &mut row);
        row[LossStat::Loss as usize] = l.loss;
        row[LossStat::Tokens as usize] = 1.0;
        (lo, hi) = (lo.min(row[min]), hi.max(row[max]));
        for s in (0..LOSS_STATS).filter(|&s| s != min && s != max) {
            sum[s] += row[s];
            mag[s] += row[s].abs();
        }
    }
    let any = sum[LossStat::Tokens as usize] > 0.0;
    (sum[min], sum[max]) = if any { (lo, hi) } else { (0.0, 0.0) };
    (sum, mag)
}

/// Statistics: `want` and `mag` from [`objective_stats`], `cpu` the CPU op's own.
fn check_stats(what: &str, got: &[f32], cpu: &[f32], want: &[f32], mag: &[f32]) {
    use LossStat::*;
    for s in 0..LOSS_STATS {
        let w = format!("{what} stat {s}");
        if [Tokens, ClipLow, ClipHigh, DualClip, TisCapped].iter().any(|&x| x as usize == s) {
            assert_eq!(got[s], want[s], "{w}: count on the GPU");
            assert_eq!(cpu[s], want[s], "{w}: the CPU, from its own log-probs, decided differently");
        } else if s == RatioMin as usize || s == RatioMax as usize {
            check(&w, &got[s..=s], &want[s..=s], 0.0, RATIO_RTOL);
        } else if s == Entropy as usize {
            check(&w, &got[s..=s], &cpu[s..=s], 0.0, REDUCE_RTOL);
        } else {
            check(&w, &got[s..=s], &want[s..=s], REDUCE_RTOL * mag[s], 0.0);
        }
    }
}

/// Log-probs (inactive rows exactly 0) and, with `grads`, both gradients.
fn check_rows_and_grads(what: &str, p: &Problem, got: &Outputs, cpu: &Outputs, d_head0: &[f32], grads: bool) {
    for r in 0..p.rows {
        if p.weights[r] == 0.0 {
            assert_eq!(got.logp[r], 0.0, "{what}: logp of inactive row {r}");
        }
    }
    check(&format!("{what} logp"), &got.logp, &cpu.logp, p.logp_tol(), 0.0);
    if !grads {
        assert_eq!(got.d_head, d_head0, "{what}: d_head changed without grads");
        return;
    }
    check(&format!("{what} d_hidden"), &got.d_hidden, &cpu.d_hidden, BF16_ULP * max_abs(&cpu.d_hidden), 0.0);
    let want_head: Vec<f32> = d_head0.iter().zip(&cpu.d_head).map(|(a, b)| a + b).collect();
    check(&format!("{what} d_head"), &got.d_head, &want_head, BF16_ULP * max_abs(&cpu.d_head), 2.0 * f32::EPSILON);
}

/// The policy-loss cases of one problem: (name, config, spread of old_logp around the
/// on-policy log-probs).
fn policy_cases(temperature: f32) -> Vec<(&'static str, Config, f32)> {
    let hp = params(temperature);
    let cfg = |params, old, reference, rollout| Config { params, old, reference, rollout };
    vec![
        ("on-policy", cfg(hp, false, false, false), 0.0),
        ("clip-higher, dual clip", cfg(PolicyLossParams { clip_high: 0.28, dual_clip: Some(3.0), ..hp }, true, false, false), 1.5),
        ("k1", cfg(PolicyLossParams { kl_coef: 0.1, kl_estimator: KlEstimator::K1, ..hp }, true, true, false), 0.5),
        ("k2, TIS cap", cfg(PolicyLossParams { kl_coef: 0.05, kl_estimator: KlEstimator::K2, tis_cap: Some(1.5), ..hp }, true, true, true), 0.5),
        ("k3 on-policy, mismatch", cfg(PolicyLossParams { kl_coef: 0.2, kl_estimator: KlEstimator::K3, ..hp }, false, true, true), 0.0),
    ]
}

/// Old, reference and rollout log-probs around the problem's on-policy ones (rollout around
/// old, or around the current log-probs on-policy).
fn draw_logps(rng: &mut Rng, p: &Problem, spread: f32) -> [Vec<f32>; 3] {
    let old = p.near_logp(rng, spread);
    let reference = p.near_logp(rng, 1.0);
    let base = if spread > 0.0 { &old } else { &p.logp };
    let rollout = base.iter().map(|&l| l + rng.uniform(-0.5, 0.5)).collect();
    [old, reference, rollout]
}

#[test]
fn policy_loss_matches_cpu() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(101);
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let temperature = if i % 2 == 0 { 1.0 } else { 0.7 };
        let p = Problem::new(&mut rng, shape, temperature);
        let d_head0 = rng.bf16_vec(p.vocab * p.dim, 0.01);
        for (name, c, spread) in policy_cases(temperature) {
            let [old, reference, rollout] = draw_logps(&mut rng, &p, spread);
            let logps = [&old, &reference, &rollout];
            let cpu = run_cpu(&p, &c, logps, true);
            for grads in [true, false] {
                let what = format!("{shape:?} T={temperature} {name} grads={grads}");
                let got = run_gpu(g, &p, &c, logps, F32, grads, &d_head0, false);
                check_rows_and_grads(&what, &p, &got, &cpu, &d_head0, grads);
                let (want, mag) = objective_stats(&p, &c, &got.logp, logps);
                check_stats(&what, &got.stats, &cpu.stats, &want, &mag);
            }
        }
    }
}

#[test]
fn policy_loss_bf16_tensors() {
    // The per-row inputs, then also the log-probs, statistics and gradients, stored as bf16
    // (what the trainer's `be.from_f32` / `be.zeros` give on CUDA). Inputs are rounded first,
    // so both backends see the same values and the f32-output run is checked as above; the
    // bf16 outputs must be that run's outputs rounded once (within a bf16 spacing, plus the
    // order of the atomic sums and of the d_head product for elements that cancel), except
    // d_head, which is rounded once per chunk.
    let g = gpu_or_skip!();
    let mut rng = Rng::new(102);
    for shape in [SHAPES[1], SHAPES[2]] {
        let mut p = Problem::new(&mut rng, shape, 1.0);
        p.weights.iter_mut().chain(p.advantages.iter_mut()).for_each(|x| *x = bf16(*x));
        let d_head0 = rng.bf16_vec(p.vocab * p.dim, 0.01);
        let (_, c, spread) = policy_cases(1.0).remove(3);
        let [old, reference, rollout] = draw_logps(&mut rng, &p, spread).map(|v| v.into_iter().map(bf16).collect::<Vec<_>>());
        let logps = [&old, &reference, &rollout];
        let cpu = run_cpu(&p, &c, logps, true);
        let what = format!("{shape:?} bf16 inputs");
        let got = run_gpu(g, &p, &c, logps, Storage { inputs: DType::Bf16, outputs: DType::F32 }, true, &d_head0, false);
        check_rows_and_grads(&what, &p, &got, &cpu, &d_head0, true);
        let (want, mag) = objective_stats(&p, &c, &got.logp, logps);
        check_stats(&what, &got.stats, &cpu.stats, &want, &mag);

        let what = format!("{shape:?} bf16 outputs");
        let b = run_gpu(g, &p, &c, logps, Storage { inputs: DType::Bf16, outputs: DType::Bf16 }, true, &d_head0, false);
        check(&format!("{what} logp"), &b.logp, &got.logp, 0.0, BF16_ULP);
        check(&format!("{what} stats"), &b.stats, &got.stats, REDUCE_RTOL * max_abs(&mag), BF16_ULP);
        check(&format!("{what} d_hidden"), &b.d_hidden, &got.d_hidden, REDUCE_RTOL * max_abs(&got.d_hidden), BF16_ULP);
        let grad: Vec<f32> = got.d_head.iter().zip(&d_head0).map(|(a, b)| a - b).collect();
        // d_head is accumulated chunk by chunk, each product rounded to bf16 on top of the running
        // value (at most d_head0 plus the gradient in size): up to 2^-8 of that per chunk after the
        // first.
        let active = p.weights.iter().filter(|&&w| w != 0.0).count();
        let extra_roundings = (active.div_ceil(p.chunk) - 1) as f32;
        let running = max_abs(&d_head0) + max_abs(&grad);
        let atol = REDUCE_RTOL * max_abs(&grad) + extra_roundings * BF16_ULP / 2.0 * running;
        check(&format!("{what} d_head"), &b.d_head, &got.d_head, atol, BF16_ULP);
    }
}

#[test]
fn cross_entropy_matches_cpu() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(103);
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let temperature = if i % 2 == 0 { 1.0 } else { 0.7 };
        let p = Problem::new(&mut rng, shape, temperature);
        let none = vec![0f32; p.rows];
        let c = Config { params: params(temperature), old: false, reference: false, rollout: false };
        let d_head0 = rng.bf16_vec(p.vocab * p.dim, 0.01);
        let (mut logp, mut stats) = (vec![0f32; p.rows], vec![0f32; LOSS_STATS]);
        let (mut dh, mut dw) = (vec![0f32; p.rows * p.dim], vec![0f32; p.vocab * p.dim]);
        let rows = LossRows { rows: p.rows, dim: p.dim, vocab: p.vocab, chunk: p.chunk, hidden: &p.hidden, head: &p.head, targets: &p.targets, weights: &p.weights };
        Cpu.cross_entropy(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut dh, d_head: &mut dw }), &CrossEntropy { rows, temperature }).unwrap();
        let cpu = Outputs { logp, stats, d_hidden: dh, d_head: dw };
        for grads in [true, false] {
            let what = format!("{shape:?} T={temperature} cross-entropy grads={grads}");
            let got = run_gpu(g, &p, &c, [&none, &none, &none], F32, grads, &d_head0, true);
            check_rows_and_grads(&what, &p, &got, &cpu, &d_head0, grads);
            // the loss from the GPU's own log-probs; counts, ratio 1 and zeros exactly
            let active: Vec<usize> = (0..p.rows).filter(|&r| p.weights[r] != 0.0).collect();
            let mut want = vec![0f32; LOSS_STATS];
            let mut mag = vec![0f32; LOSS_STATS];
            for &r in &active {
                want[LossStat::Loss as usize] += -p.weights[r] * got.logp[r];
                mag[LossStat::Loss as usize] += (p.weights[r] * got.logp[r]).abs();
            }
            want[LossStat::Tokens as usize] = active.len() as f32;
            want[LossStat::RatioMin as usize] = 1.0;
            want[LossStat::RatioMax as usize] = 1.0;
            check_stats(&what, &got.stats, &cpu.stats, &want, &mag);
        }
    }
}

#[test]
fn losses_without_active_rows_and_bad_targets() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(104);
    let mut p = Problem::new(&mut rng, SHAPES[1], 1.0);
    let d_head0 = rng.bf16_vec(p.vocab * p.dim, 0.01);
    let none = vec![0f32; p.rows];
    let c = Config { params: params(1.0), old: false, reference: false, rollout: false };
    let active_weights = p.weights.clone();
    p.weights.fill(0.0);
    for cross in [false, true] {
        let got = run_gpu(g, &p, &c, [&none, &none, &none], F32, true, &d_head0, cross);
        assert!(got.logp.iter().all(|&x| x == 0.0), "cross={cross}: logp of inactive rows");
        assert!(got.d_hidden.iter().all(|&x| x == 0.0), "cross={cross}: d_hidden not overwritten with zeros");
        assert_eq!(got.d_head, d_head0, "cross={cross}: d_head changed");
        let ratio = if cross { 1.0 } else { 0.0 };
        let mut want = vec![0f32; LOSS_STATS];
        want[LossStat::RatioMin as usize] = ratio;
        want[LossStat::RatioMax as usize] = ratio;
        assert_eq!(got.stats, want, "cross={cross}: statistics with no active row");
    }
    // A target outside the vocabulary is an error on an active row, ignored on an inactive one.
    p.weights = active_weights;
    p.weights[3] = 0.0;
    p.targets[3] = p.vocab as u32;
    run_gpu(g, &p, &c, [&none, &none, &none], F32, true, &d_head0, false);
    p.targets[0] = p.vocab as u32 + 5;
    let (hidden, head, targets, weights) = (put(g, &p.hidden, DType::Bf16), put(g, &p.head, DType::Bf16), g.index(&p.targets).unwrap(), put(g, &p.weights, DType::F32));
    let rows = LossRows { rows: p.rows, dim: p.dim, vocab: p.vocab, chunk: p.chunk, hidden: &hidden, head: &head, targets: &targets, weights: &weights };
    let (mut logp, mut stats) = (g.zeros_f32(p.rows).unwrap(), g.zeros_f32(LOSS_STATS).unwrap());
    let err = g.cross_entropy(&mut logp, &mut stats, None, &CrossEntropy { rows, temperature: 1.0 }).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}
