//! The chunked objective against itself at other chunk sizes and against a plain f64
//! composition over whole logits (log-softmax, ratio, clip, KL, token-mean).

mod common;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{Backend, CrossEntropy, KlEstimator, LossGrads, LossRows, LossStat, PolicyLoss, PolicyLossParams, LOSS_STATS};

use common::{rel_err, TestRng};

const ROWS: usize = 37;
const DIM: usize = 16;
const VOCAB: usize = 101;

struct Data {
    hidden: Vec<f32>,
    head: Vec<f32>,
    targets: Vec<u32>,
    weights: Vec<f32>,
    adv: Vec<f32>,
    old: Vec<f32>,
    refp: Vec<f32>,
}

fn data() -> Data {
    let mut rng = TestRng(42);
    let hidden: Vec<f32> = (0..ROWS * DIM).map(|_| rng.uniform()).collect();
    let head: Vec<f32> = (0..VOCAB * DIM).map(|_| 0.7 * rng.uniform()).collect();
    let targets: Vec<u32> = (0..ROWS).map(|_| rng.below(VOCAB) as u32).collect();
    let mask: Vec<f32> = (0..ROWS).map(|r| if r % 5 == 3 { 0.0 } else { 1.0 }).collect();
    let n: f32 = mask.iter().sum();
    let weights = mask.iter().map(|m| m / n).collect();
    let adv = (0..ROWS).map(|r| if r % 3 == 0 { -1.2 } else { 0.8 }).collect();
    let old = (0..ROWS).map(|_| -4.6 + 0.8 * rng.uniform()).collect();
    let refp = (0..ROWS).map(|_| -4.6 + 0.8 * rng.uniform()).collect();
    Data { hidden, head, targets, weights, adv, old, refp }
}

const PARAMS: PolicyLossParams = PolicyLossParams { temperature: 0.8, clip_low: 0.2, clip_high: 0.28, dual_clip: None, kl_coef: 0.04, kl_estimator: KlEstimator::K3, tis_cap: None };

/// (logp, stats, d_hidden, d_head) of the policy loss at `chunk`.
fn run(d: &Data, chunk: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (targets, mut logp, mut stats) = (Cpu.index(&d.targets).unwrap(), vec![0.0; ROWS], vec![0.0; LOSS_STATS]);
    let (mut dh, mut dw) = (vec![0.0; ROWS * DIM], vec![0.0; VOCAB * DIM]);
    let p = PolicyLoss {
        rows: LossRows { rows: ROWS, dim: DIM, vocab: VOCAB, chunk, hidden: &d.hidden, head: &d.head, targets: &targets, weights: &d.weights },
        advantages: &d.adv,
        old_logp: Some(&d.old),
        ref_logp: Some(&d.refp),
        rollout_logp: None,
        params: PARAMS,
    };
    Cpu.policy_loss(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut dh, d_head: &mut dw }), &p).unwrap();
    (logp, stats, dh, dw)
}

#[test]
fn chunked_objective_matches_whole_logits_in_f64() {
    let d = data();
    // The reference: whole [rows, vocab] logits, f64 throughout.
    let (t, n_tok) = (PARAMS.temperature as f64, d.weights.iter().filter(|&&w| w != 0.0).count());
    let mut loss = 0f64;
    let mut clipped = 0usize;
    let mut dh = vec![0f64; ROWS * DIM];
    let mut dw = vec![0f64; VOCAB * DIM];
    let mut logp = vec![0f64; ROWS];
    for r in 0..ROWS {
        let w = d.weights[r] as f64;
        if w == 0.0 {
            continue;
        }
        let h = &d.hidden[r * DIM..(r + 1) * DIM];
        let z: Vec<f64> = (0..VOCAB).map(|v| (0..DIM).map(|k| h[k] as f64 * d.head[v * DIM + k] as f64).sum::<f64>() / t).collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let lp = z[d.targets[r] as usize] - lse;
        logp[r] = lp;
        let (a, ratio) = (d.adv[r] as f64, (lp - d.old[r] as f64).exp());
        let clip = ratio.clamp(1.0 - PARAMS.clip_low as f64, 1.0 + PARAMS.clip_high as f64);
        let (pg, dpg) = if -a * ratio >= -a * clip { (-a * ratio, -a * ratio) } else { (-a * clip, 0.0) };
        clipped += (-a * ratio < -a * clip) as usize;
        let dl = d.refp[r] as f64 - lp;
        let kl = dl.exp() - dl - 1.0;
        loss += w * (pg + PARAMS.kl_coef as f64 * kl);
        let g = w * (dpg + PARAMS.kl_coef as f64 * (1.0 - dl.exp()));
        for v in 0..VOCAB {
            let dz = g * (((v == d.targets[r] as usize) as u8 as f64) - (z[v] - lse).exp()) / t;
            for k in 0..DIM {
                dh[r * DIM + k] += dz * d.head[v * DIM + k] as f64;
                dw[v * DIM + k] += dz * h[k] as f64;
            }
        }
    }
    let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    for chunk in [1, 4, ROWS, 1000] {
        let (lp, stats, gh, gw) = run(&d, chunk);
        assert!(rel_err(&lp, &f(&logp), 0.0) < 1e-5, "chunk {chunk}: logp");
        let l = stats[LossStat::Loss as usize] as f64;
        assert!((l - loss).abs() < 1e-5 * loss.abs() + 1e-7, "chunk {chunk}: loss {l} vs {loss}");
        let cf = (stats[LossStat::ClipLow as usize] + stats[LossStat::ClipHigh as usize]) / stats[LossStat::Tokens as usize];
        assert_eq!(cf, clipped as f32 / n_tok as f32);
        assert!(clipped > 0);
        assert!(rel_err(&gh, &f(&dh), 1e-6) < 1e-4, "chunk {chunk}: d_hidden {}", rel_err(&gh, &f(&dh), 1e-6));
        assert!(rel_err(&gw, &f(&dw), 1e-6) < 1e-4, "chunk {chunk}: d_head {}", rel_err(&gw, &f(&dw), 1e-6));
        // Idle rows: log-prob and gradient are zero.
        assert!(d.weights.iter().enumerate().filter(|(_, &w)| w == 0.0).all(|(r, _)| lp[r] == 0.0 && gh[r * DIM..(r + 1) * DIM].iter().all(|&x| x == 0.0)));
    }
    // Chunked and unchunked agree to rounding (the matrix products block differently).
    let (a, b) = (run(&d, 1), run(&d, ROWS));
    assert!(rel_err(&a.0, &b.0, 0.0) < 1e-6);
    assert!(rel_err(&a.2, &b.2, 0.0) < 1e-5);
    assert!(rel_err(&a.3, &b.3, 0.0) < 1e-5);
}

#[test]
fn cross_entropy_is_the_mean_negative_log_prob() {
    let d = data();
    let targets = Cpu.index(&d.targets).unwrap();
    let rows = LossRows { rows: ROWS, dim: DIM, vocab: VOCAB, chunk: 6, hidden: &d.hidden, head: &d.head, targets: &targets, weights: &d.weights };
    let (mut logp, mut stats, mut dh, mut dw) = (vec![0.0; ROWS], vec![0.0; LOSS_STATS], vec![0.0; ROWS * DIM], vec![0.0; VOCAB * DIM]);
    Cpu.cross_entropy(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut dh, d_head: &mut dw }), &CrossEntropy { rows, temperature: 1.0 }).unwrap();
    let mean = -logp.iter().zip(&d.weights).map(|(l, w)| l * w).sum::<f32>();
    assert!((stats[LossStat::Loss as usize] - mean).abs() < 1e-6);
    // Without gradients and another chunk: the same log-probs, to rounding.
    let (mut logp2, mut stats2) = (vec![0.0; ROWS], vec![0.0; LOSS_STATS]);
    let rows = LossRows { rows: ROWS, dim: DIM, vocab: VOCAB, chunk: 100, hidden: &d.hidden, head: &d.head, targets: &targets, weights: &d.weights };
    Cpu.cross_entropy(&mut logp2, &mut stats2, None, &CrossEntropy { rows, temperature: 1.0 }).unwrap();
    assert!(rel_err(&logp, &logp2, 0.0) < 1e-6);
    assert!(stats2[LossStat::Entropy as usize] > 0.0);
}

/// Without old log-probs the objective is on-policy: the same as passing the current log-probs.
#[test]
fn on_policy_objective_equals_passing_the_current_logprobs() {
    let d = data();
    let targets = Cpu.index(&d.targets).unwrap();
    let run = |old: Option<&Vec<f32>>| {
        let (mut logp, mut stats) = (vec![0.0; ROWS], vec![0.0; LOSS_STATS]);
        let (mut dh, mut dw) = (vec![0.0; ROWS * DIM], vec![0.0; VOCAB * DIM]);
        let p = PolicyLoss {
            rows: LossRows { rows: ROWS, dim: DIM, vocab: VOCAB, chunk: 8, hidden: &d.hidden, head: &d.head, targets: &targets, weights: &d.weights },
            advantages: &d.adv,
            old_logp: old,
            ref_logp: Some(&d.refp),
            rollout_logp: None,
            params: PARAMS,
        };
        Cpu.policy_loss(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut dh, d_head: &mut dw }), &p).unwrap();
        (logp, stats, dh, dw)
    };
    let on = run(None);
    let current = on.0.clone();
    let off = run(Some(&current));
    assert_eq!(on.0, off.0);
    assert_eq!(on.1, off.1);
    assert_eq!(on.2, off.2);
    assert_eq!(on.3, off.3);
    assert_eq!(on.1[LossStat::RatioMin as usize], 1.0);
    assert_eq!(on.1[LossStat::RatioMax as usize], 1.0);
}
