//! The token-level losses on the CPU: the clipped policy-gradient objective and cross-entropy,
//! both over one chunked log-softmax of the output head.
//!
//! For each chunk of active rows (weight ≠ 0): gather their hidden states, form the logits
//! `[chunk, vocab]` with one matrix product, turn each row into `exp(z - max)` in place (one
//! exponential per logit) and read off log-prob, log-sum-exp and entropy; the objective gives
//! `dL/dlogp` per row; the row becomes `dL/dlogits = dL/dlogp · (onehot - p) / T` in place, and
//! two more products give `d_hidden` and accumulate `d_head`. Peak scratch: `chunk × vocab`.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use crate::backend::{Gemm, KlEstimator, LossRows, LossStat, PolicyLossParams, LOSS_STATS};

use super::ops::{fast_exp, gemm};
use super::Cpu;

/// Log-softmax statistics of one row, which now holds `e_j = exp(z_j - max)`.
#[derive(Clone, Copy, Default)]
struct RowSoftmax {
    /// `z[target] - logsumexp(z)`.
    logp: f32,
    entropy: f32,
    /// `sum_j e_j`.
    sum: f32,
}

/// `z = row / temperature`; replaces the row by `exp(z - max z)`.
fn softmax_row(row: &mut [f32], target: usize, inv_t: f32) -> RowSoftmax {
    const L: usize = 16;
    let mut mx = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for i in 0..L {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let max = chunks.remainder().iter().fold(mx.iter().copied().fold(f32::NEG_INFINITY, f32::max), |a, &b| a.max(b));
    let shift = max * inv_t;
    let z_target = row[target] * inv_t - shift;
    let (mut sum, mut ez) = ([0f32; L], [0f32; L]);
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for i in 0..L {
            let z = c[i] * inv_t - shift;
            let e = fast_exp(z);
            c[i] = e;
            sum[i] += e;
            ez[i] += e * z;
        }
    }
    let (mut s, mut a) = (sum.iter().sum::<f32>(), ez.iter().sum::<f32>());
    for v in chunks.into_remainder() {
        let z = *v * inv_t - shift;
        let e = fast_exp(z);
        *v = e;
        s += e;
        a += e * z;
    }
    let ln_s = s.ln();
    RowSoftmax { logp: z_target - ln_s, entropy: ln_s - a / s, sum: s }
}

/// Per-row outputs of an objective: the loss term (already weighted) and `dL/dlogp`.
#[derive(Clone, Copy, Default)]
pub struct RowLoss {
    pub loss: f32,
    pub dlogp: f32,
}

/// Runs the chunked log-softmax over the active rows of `p`; `objective(row, logp, entropy,
/// stats)` returns each row's loss term and `dL/dlogp` and adds to `stats`.
pub fn chunked_loss(
    p: &LossRows<Cpu>,
    temperature: f32,
    logp_out: &mut [f32],
    stats: &mut [f32],
    grads: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    mut objective: impl FnMut(usize, f32, f32, &mut [f32]) -> RowLoss,
) -> Result<()> {
    let (rows, dim, vocab) = (p.rows, p.dim, p.vocab);
    ensure!(p.chunk > 0, "loss chunk must be positive");
    ensure!(temperature > 0.0, "temperature must be positive, got {temperature}");
    ensure!(p.hidden.len() >= rows * dim && p.head.len() >= vocab * dim, "loss: hidden or head smaller than [{rows}, {dim}] / [{vocab}, {dim}]");
    ensure!(p.targets.len() >= rows && p.weights.len() >= rows && logp_out.len() >= rows, "loss: fewer than {rows} targets, weights or log-prob slots");
    ensure!(stats.len() >= LOSS_STATS, "loss: stats needs {LOSS_STATS} slots");
    let active: Vec<usize> = (0..rows).filter(|&r| p.weights[r] != 0.0).collect();
    for &r in &active {
        ensure!((p.targets[r] as usize) < vocab, "target token {} of row {r} is outside the vocabulary ({vocab})", p.targets[r]);
    }
    logp_out[..rows].fill(0.0);
    stats[..LOSS_STATS].fill(0.0);
    stats[LossStat::RatioMin as usize] = f32::INFINITY;
    stats[LossStat::RatioMax as usize] = f32::NEG_INFINITY;
    let mut grads = grads;
    if let Some((dh, dw)) = grads.as_mut() {
        ensure!(dh.len() >= rows * dim && dw.len() >= vocab * dim, "loss: gradient buffers smaller than [{rows}, {dim}] / [{vocab}, {dim}]");
        dh[..rows * dim].fill(0.0);
    }
    let inv_t = 1.0 / temperature;
    let chunk = p.chunk.min(active.len().max(1));
    let mut logits = vec![0f32; chunk * vocab];
    let mut h = vec![0f32; chunk * dim];
    let mut dh_chunk = vec![0f32; if grads.is_some() { chunk * dim } else { 0 }];
    let mut row_loss = vec![RowLoss::default(); chunk];

    for ids in active.chunks(chunk) {
        let c = ids.len();
        for (i, &r) in ids.iter().enumerate() {
            h[i * dim..(i + 1) * dim].copy_from_slice(&p.hidden[r * dim..(r + 1) * dim]);
        }
        gemm(&mut logits, &h, p.head, Gemm::linear(c, vocab, dim))?;
        let soft: Vec<RowSoftmax> = logits[..c * vocab]
            .par_chunks_mut(vocab)
            .zip(ids.par_iter())
            .map(|(row, &r)| softmax_row(row, p.targets[r] as usize, inv_t))
            .collect();
        for (i, &r) in ids.iter().enumerate() {
            logp_out[r] = soft[i].logp;
            stats[LossStat::Tokens as usize] += 1.0;
            stats[LossStat::Entropy as usize] += soft[i].entropy;
            row_loss[i] = objective(r, soft[i].logp, soft[i].entropy, stats);
            stats[LossStat::Loss as usize] += row_loss[i].loss;
        }
        let Some((d_hidden, d_head)) = grads.as_mut() else { continue };
        logits[..c * vocab].par_chunks_mut(vocab).enumerate().for_each(|(i, row)| {
            let g = row_loss[i].dlogp * inv_t;
            let scale = -g / soft[i].sum;
            row.iter_mut().for_each(|e| *e *= scale);
            row[p.targets[ids[i]] as usize] += g;
        });
        gemm(&mut dh_chunk, &logits, p.head, Gemm { m: c, n: dim, k: vocab, trans_a: false, trans_b: false, accumulate: false })?;
        for (i, &r) in ids.iter().enumerate() {
            d_hidden[r * dim..(r + 1) * dim].copy_from_slice(&dh_chunk[i * dim..(i + 1) * dim]);
        }
        gemm(d_head, &logits, &h, Gemm { m: vocab, n: dim, k: c, trans_a: true, trans_b: false, accumulate: true })?;
    }
    if active.is_empty() {
        stats[LossStat::RatioMin as usize] = 0.0;
        stats[LossStat::RatioMax as usize] = 0.0;
    }
    Ok(())
}

/// The per-token inputs of the policy objective.
pub struct PolicyToken {
    pub weight: f32,
    pub advantage: f32,
    /// `None`: the current log-prob, detached.
    pub old_logp: Option<f32>,
    pub ref_logp: Option<f32>,
    pub rollout_logp: Option<f32>,
}

/// The clipped surrogate, dual clip, truncated importance weight and KL penalty of one token:
/// returns its weighted loss and `dL/dlogp`, and adds its statistics.
pub fn policy_token(logp: f32, t: &PolicyToken, hp: &PolicyLossParams, stats: &mut [f32]) -> RowLoss {
    let a = t.advantage;
    let old_logp = t.old_logp.unwrap_or(logp);
    let ratio = (logp - old_logp).clamp(-20.0, 20.0).exp();
    let (lo, hi) = (1.0 - hp.clip_low, 1.0 + hp.clip_high);
    let unclipped = -a * ratio;
    let clipped = -a * ratio.clamp(lo, hi);
    // max(unclipped, clipped): the clipped branch has no gradient when it wins.
    let (mut pg, mut dpg) = if unclipped >= clipped { (unclipped, -a * ratio) } else { (clipped, 0.0) };
    if unclipped < clipped {
        if a < 0.0 {
            stats[LossStat::ClipLow as usize] += 1.0;
        } else {
            stats[LossStat::ClipHigh as usize] += 1.0;
        }
    }
    if let Some(c) = hp.dual_clip {
        if a < 0.0 && pg > -a * c {
            pg = -a * c;
            dpg = 0.0;
            stats[LossStat::DualClip as usize] += 1.0;
        }
    }
    if let Some(rollout) = t.rollout_logp {
        let d = (old_logp - rollout).clamp(-20.0, 20.0);
        let w = d.exp();
        // exp(d) - 1 - d through expm1: exact enough for the tiny mismatches of one runtime.
        stats[LossStat::Mismatch as usize] += d.exp_m1() - d;
        if let Some(cap) = hp.tis_cap {
            let wc = w.min(cap);
            if w > cap {
                stats[LossStat::TisCapped as usize] += 1.0;
            }
            stats[LossStat::TisWeight as usize] += wc;
            pg *= wc;
            dpg *= wc;
        }
    }
    let (mut kl, mut dkl) = (0.0, 0.0);
    if let Some(r) = t.ref_logp {
        let d = r - logp;
        (kl, dkl) = match hp.kl_estimator {
            KlEstimator::K1 => (-d, 1.0),
            KlEstimator::K2 => (0.5 * d * d, -d),
            KlEstimator::K3 => {
                let em1 = d.clamp(-20.0, 20.0).exp_m1();
                (em1 - d, -em1)
            }
        };
        stats[LossStat::Kl as usize] += kl;
    }
    stats[LossStat::RatioSum as usize] += ratio;
    let min = &mut stats[LossStat::RatioMin as usize];
    *min = min.min(ratio);
    let max = &mut stats[LossStat::RatioMax as usize];
    *max = max.max(ratio);
    RowLoss { loss: t.weight * (pg + hp.kl_coef * kl), dlogp: t.weight * (dpg + hp.kl_coef * dkl) }
}
