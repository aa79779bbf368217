//! The policy-gradient objective and cross-entropy as the trainer uses them: options named as
//! verl/TRL users know them, per-row inputs built from packed sequences, loss aggregation as
//! per-token weights, and metrics read from the loss op's statistics.
//!
//! The backend op ([`Backend::policy_loss`]) owns the per-token math; this module owns how
//! tokens are weighted. Every aggregation mode is a weight per token, computed over the whole
//! optimizer batch, so gradient accumulation over micro-batches gives the same update as one
//! big batch:
//!
//! | `loss_agg` | weight of a completion token of sequence `i` |
//! | --- | --- |
//! | `token-mean` (default) | `1 / (completion tokens in the batch)` |
//! | `seq-mean-token-mean` | `1 / (sequences · completion tokens of i)` |
//! | `seq-mean-token-sum-norm` (Dr. GRPO) | `1 / (sequences · norm_len)` |

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, CrossEntropy, KlEstimator, LossGrads, LossRows, LossStat, PolicyLoss, PolicyLossParams, LOSS_STATS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LossAgg {
    #[default]
    #[serde(rename = "token-mean")]
    TokenMean,
    #[serde(rename = "seq-mean-token-mean")]
    SeqMeanTokenMean,
    #[serde(rename = "seq-mean-token-sum-norm")]
    SeqMeanTokenSumNorm,
}

/// The objective's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Applied to the logits before the log-softmax; must match the sampling temperature.
    pub temperature: f32,
    pub clip_low: f32,
    pub clip_high: f32,
    /// Dual-clip constant (verl's `clip_ratio_c`, e.g. 3.0); off when absent.
    pub dual_clip: Option<f32>,
    /// KL penalty to the reference policy (`beta`); 0 turns it off.
    pub kl_coef: f32,
    pub kl_estimator: KlEstimator,
    pub loss_agg: LossAgg,
    /// The constant divisor of `seq-mean-token-sum-norm`; the longest completion when absent.
    pub norm_len: Option<usize>,
    /// Cap of the truncated importance weight between trainer and rollout log-probs; off when
    /// absent (the mismatch is reported either way when rollout log-probs are given).
    pub tis_cap: Option<f32>,
    /// Rows per logits chunk; by default about 16M logits.
    pub chunk_rows: Option<usize>,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            temperature: 1.0,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            kl_coef: 0.0,
            kl_estimator: KlEstimator::K3,
            loss_agg: LossAgg::TokenMean,
            norm_len: None,
            tis_cap: None,
            chunk_rows: None,
        }
    }
}

impl ObjectiveConfig {
    pub fn params(&self) -> PolicyLossParams {
        PolicyLossParams {
            temperature: self.temperature,
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            dual_clip: self.dual_clip,
            kl_coef: self.kl_coef,
            kl_estimator: self.kl_estimator,
            tis_cap: self.tis_cap,
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.temperature > 0.0, "temperature must be positive, got {}", self.temperature);
        ensure!(self.clip_low >= 0.0 && self.clip_low < 1.0, "clip_low must be in [0, 1), got {}", self.clip_low);
        ensure!(self.clip_high >= 0.0, "clip_high must be non-negative, got {}", self.clip_high);
        if let Some(c) = self.dual_clip {
            ensure!(c > 1.0, "dual_clip must be greater than 1, got {c}");
        }
        if let Some(c) = self.tis_cap {
            ensure!(c > 0.0, "tis_cap must be positive, got {c}");
        }
        ensure!(self.kl_coef >= 0.0, "kl_coef must be non-negative, got {}", self.kl_coef);
        Ok(())
    }

    pub fn chunk(&self, vocab: usize) -> usize {
        self.chunk_rows.unwrap_or_else(|| default_chunk(vocab))
    }
}

/// Rows per chunk so that a chunk of logits holds about 16M values (64 MB in f32).
pub fn default_chunk(vocab: usize) -> usize {
    ((1usize << 24) / vocab.max(1)).clamp(16, 4096)
}

/// The target of each row of packed sequences: the next token of its sequence, and 0 for the
/// last row of each sequence (whose weight must then be 0).
pub fn next_tokens(tokens: &[u32], cu_seqlens: &[u32]) -> Vec<u32> {
    let mut out = vec![0; tokens.len()];
    for w in cu_seqlens.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if b > a {
            out[a..b - 1].copy_from_slice(&tokens[a + 1..b]);
        }
    }
    out
}

/// What the loss weights are normalised by: totals over every micro-batch of one optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossTotals {
    /// Rows with a non-zero mask.
    pub tokens: usize,
    /// Sequences with at least one such row.
    pub seqs: usize,
    /// Most such rows in one sequence.
    pub max_len: usize,
}

impl LossTotals {
    /// Totals of several micro-batches, each given as (row mask, `cu_seqlens`).
    pub fn of<'a>(batches: impl IntoIterator<Item = (&'a [f32], &'a [u32])>) -> Self {
        let mut t = LossTotals { tokens: 0, seqs: 0, max_len: 0 };
        for (mask, cu) in batches {
            for w in cu.windows(2) {
                let n = mask[w[0] as usize..w[1] as usize].iter().filter(|&&m| m != 0.0).count();
                t.tokens += n;
                t.seqs += (n > 0) as usize;
                t.max_len = t.max_len.max(n);
            }
        }
        t
    }
}

/// Each row's weight in the loss (see the module table); `mask` is 1 on rows whose target is
/// a completion token.
pub fn loss_weights(mask: &[f32], cu_seqlens: &[u32], agg: LossAgg, totals: &LossTotals, norm_len: Option<usize>) -> Vec<f32> {
    let mut w = vec![0f32; mask.len()];
    if totals.tokens == 0 {
        return w;
    }
    for s in cu_seqlens.windows(2) {
        let (a, b) = (s[0] as usize, s[1] as usize);
        let n = mask[a..b].iter().filter(|&&m| m != 0.0).count();
        if n == 0 {
            continue;
        }
        let scale = match agg {
            LossAgg::TokenMean => 1.0 / totals.tokens as f64,
            LossAgg::SeqMeanTokenMean => 1.0 / (totals.seqs as f64 * n as f64),
            LossAgg::SeqMeanTokenSumNorm => 1.0 / (totals.seqs as f64 * norm_len.unwrap_or(totals.max_len).max(1) as f64),
        };
        for r in a..b {
            w[r] = (mask[r] as f64 * scale) as f32;
        }
    }
    w
}

/// The per-row inputs of the policy objective, on the host.
#[derive(Clone, Debug, Default)]
pub struct PolicyRows {
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    pub advantages: Vec<f32>,
    /// `None`: on-policy (see [`PolicyLoss::old_logp`]).
    pub old_logp: Option<Vec<f32>>,
    pub ref_logp: Option<Vec<f32>>,
    pub rollout_logp: Option<Vec<f32>>,
}

/// The statistics of one or more loss-op calls (see [`LossStat`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LossStats(pub Vec<f32>);

impl Default for LossStats {
    fn default() -> Self {
        let mut s = vec![0.0; LOSS_STATS];
        s[LossStat::RatioMin as usize] = f32::INFINITY;
        s[LossStat::RatioMax as usize] = f32::NEG_INFINITY;
        LossStats(s)
    }
}

impl LossStats {
    pub fn get(&self, s: LossStat) -> f32 {
        self.0[s as usize]
    }

    /// Adds another call's statistics (micro-batches of one step).
    pub fn combine(&mut self, other: &LossStats) {
        if other.get(LossStat::Tokens) == 0.0 {
            return;
        }
        let empty = self.get(LossStat::Tokens) == 0.0;
        for (i, (a, b)) in self.0.iter_mut().zip(&other.0).enumerate() {
            *a = if i == LossStat::RatioMin as usize {
                if empty { *b } else { a.min(*b) }
            } else if i == LossStat::RatioMax as usize {
                if empty { *b } else { a.max(*b) }
            } else {
                *a + b
            };
        }
    }

    pub fn metrics(&self) -> PolicyMetrics {
        let n = self.get(LossStat::Tokens).max(1.0);
        let mean = |s: LossStat| self.get(s) / n;
        PolicyMetrics {
            loss: self.get(LossStat::Loss),
            tokens: self.get(LossStat::Tokens) as usize,
            clip_frac: (self.get(LossStat::ClipLow) + self.get(LossStat::ClipHigh)) / n,
            clip_frac_low: mean(LossStat::ClipLow),
            clip_frac_high: mean(LossStat::ClipHigh),
            dual_clip_frac: mean(LossStat::DualClip),
            kl_mean: mean(LossStat::Kl),
            entropy_mean: mean(LossStat::Entropy),
            ratio_mean: mean(LossStat::RatioSum),
            ratio_min: self.get(LossStat::RatioMin),
            ratio_max: self.get(LossStat::RatioMax),
            tis_weight_mean: mean(LossStat::TisWeight),
            tis_capped_frac: mean(LossStat::TisCapped),
            mismatch_kl: mean(LossStat::Mismatch),
        }
    }
}

/// The objective's metrics over the active tokens of a step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyMetrics {
    pub loss: f32,
    pub tokens: usize,
    pub clip_frac: f32,
    pub clip_frac_low: f32,
    pub clip_frac_high: f32,
    pub dual_clip_frac: f32,
    pub kl_mean: f32,
    pub entropy_mean: f32,
    pub ratio_mean: f32,
    pub ratio_min: f32,
    pub ratio_max: f32,
    /// Mean truncated importance weight and fraction of tokens where the cap applied.
    pub tis_weight_mean: f32,
    pub tis_capped_frac: f32,
    /// k3 estimate of `KL(rollout || trainer)` per token: the rollout/trainer mismatch.
    pub mismatch_kl: f32,
}

/// Runs [`Backend::policy_loss`] over final hidden states `hidden` (`[rows, dim]`) and the
/// output head; returns each row's log-prob and the statistics. The per-row inputs and the
/// outputs are f32 on every backend ([`Backend::from_f32_exact`], [`Backend::zeros_f32`]):
/// log-probs and token counts would not survive bf16.
#[allow(clippy::too_many_arguments)]
pub fn policy_loss<B: Backend>(be: &B, hidden: &B::Tensor, head: &B::Tensor, dim: usize, vocab: usize, rows: &PolicyRows, cfg: &ObjectiveConfig, grads: Option<LossGrads<B>>) -> Result<(Vec<f32>, LossStats)> {
    let n = rows.targets.len();
    let opt_len = |x: &Option<Vec<f32>>| x.as_ref().is_none_or(|v| v.len() == n);
    ensure!(rows.weights.len() == n && rows.advantages.len() == n && opt_len(&rows.old_logp) && opt_len(&rows.ref_logp) && opt_len(&rows.rollout_logp), "policy rows disagree in length");
    let targets = be.index(&rows.targets)?;
    let weights = be.from_f32_exact(&rows.weights)?;
    let advantages = be.from_f32_exact(&rows.advantages)?;
    let old_logp = rows.old_logp.as_deref().map(|x| be.from_f32_exact(x)).transpose()?;
    let ref_logp = rows.ref_logp.as_deref().map(|x| be.from_f32_exact(x)).transpose()?;
    let rollout_logp = rows.rollout_logp.as_deref().map(|x| be.from_f32_exact(x)).transpose()?;
    let p = PolicyLoss {
        rows: LossRows { rows: n, dim, vocab, chunk: cfg.chunk(vocab), hidden, head, targets: &targets, weights: &weights },
        advantages: &advantages,
        old_logp: old_logp.as_ref(),
        ref_logp: if cfg.kl_coef > 0.0 { ref_logp.as_ref() } else { None },
        rollout_logp: rollout_logp.as_ref(),
        params: cfg.params(),
    };
    let mut logp = be.zeros_f32(n)?;
    let mut stats = be.zeros_f32(LOSS_STATS)?;
    be.policy_loss(&mut logp, &mut stats, grads, &p)?;
    Ok((be.to_f32(&logp)?, LossStats(be.to_f32(&stats)?)))
}

/// Runs [`Backend::cross_entropy`]: `-sum(weights · logp)`; with weights `1/n` on the `n`
/// masked rows this is the mean next-token cross-entropy.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy<B: Backend>(be: &B, hidden: &B::Tensor, head: &B::Tensor, dim: usize, vocab: usize, targets: &[u32], weights: &[f32], chunk: usize, grads: Option<LossGrads<B>>) -> Result<(Vec<f32>, LossStats)> {
    let n = targets.len();
    ensure!(weights.len() == n, "targets and weights disagree in length");
    let (targets, weights) = (be.index(targets)?, be.from_f32_exact(weights)?);
    let p = CrossEntropy { rows: LossRows { rows: n, dim, vocab, chunk, hidden, head, targets: &targets, weights: &weights }, temperature: 1.0 };
    let mut logp = be.zeros_f32(n)?;
    let mut stats = be.zeros_f32(LOSS_STATS)?;
    be.cross_entropy(&mut logp, &mut stats, grads, &p)?;
    Ok((be.to_f32(&logp)?, LossStats(be.to_f32(&stats)?)))
}
