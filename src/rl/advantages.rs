//! Group-relative advantages: each prompt's completions are scored against each other.
//!
//! `A_i = (r_i - b_i) / (std + eps)` with `b_i` the group mean (GRPO) or the mean of the other
//! completions (leave-one-out, RLOO), and the division by the group's standard deviation
//! optional (Dr. GRPO drops it). The standard deviation is the unbiased one, as `torch.std`
//! computes it in TRL and verl. A group whose rewards are all equal carries no signal; the
//! fraction of samples in such groups is reported as `frac_reward_zero_std` and the groups can
//! be dropped from the batch.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    #[default]
    Mean,
    LeaveOneOut,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvantageConfig {
    pub baseline: Baseline,
    /// Divide by the group's standard deviation (GRPO); off for Dr. GRPO.
    pub scale_by_std: bool,
    pub eps: f32,
    /// Drop groups whose rewards are all equal.
    pub filter_zero_std: bool,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        AdvantageConfig { baseline: Baseline::Mean, scale_by_std: true, eps: 1e-6, filter_zero_std: false }
    }
}

impl AdvantageConfig {
    pub fn grpo() -> Self {
        Self::default()
    }
    pub fn dr_grpo() -> Self {
        AdvantageConfig { scale_by_std: false, ..Self::default() }
    }
    pub fn rloo() -> Self {
        AdvantageConfig { baseline: Baseline::LeaveOneOut, scale_by_std: false, ..Self::default() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    /// One per sample, in input order (0 for filtered samples).
    pub advantages: Vec<f32>,
    /// Whether each sample stays in the batch (false only when filtering zero-std groups).
    pub keep: Vec<bool>,
    /// Fraction of samples whose group's rewards are all equal.
    pub frac_reward_zero_std: f32,
}

/// Advantages of `rewards`, where samples with the same `group` id answer the same prompt.
pub fn group_advantages(rewards: &[f32], group: &[u32], cfg: &AdvantageConfig) -> Result<Advantages> {
    ensure!(rewards.len() == group.len(), "{} rewards for {} group ids", rewards.len(), group.len());
    ensure!(rewards.iter().all(|r| r.is_finite()), "rewards must be finite");
    let mut ids: Vec<u32> = group.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Advantages { advantages: vec![0.0; rewards.len()], keep: vec![true; rewards.len()], frac_reward_zero_std: 0.0 };
    let mut zero_std_samples = 0usize;
    for id in ids {
        let members: Vec<usize> = (0..rewards.len()).filter(|&i| group[i] == id).collect();
        let n = members.len() as f64;
        let sum: f64 = members.iter().map(|&i| rewards[i] as f64).sum();
        let mean = sum / n;
        let var = if n > 1.0 { members.iter().map(|&i| (rewards[i] as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let std = var.sqrt();
        let zero_std = members.iter().all(|&i| rewards[i] == rewards[members[0]]);
        if zero_std {
            zero_std_samples += members.len();
        }
        for &i in &members {
            let r = rewards[i] as f64;
            let baseline = match cfg.baseline {
                Baseline::Mean => mean,
                Baseline::LeaveOneOut if n > 1.0 => (sum - r) / (n - 1.0),
                Baseline::LeaveOneOut => r,
            };
            let mut a = r - baseline;
            if cfg.scale_by_std {
                a /= std + cfg.eps as f64;
            }
            out.advantages[i] = a as f32;
            if zero_std && cfg.filter_zero_std {
                out.keep[i] = false;
                out.advantages[i] = 0.0;
            }
        }
    }
    out.frac_reward_zero_std = if rewards.is_empty() { 0.0 } else { zero_std_samples as f32 / rewards.len() as f32 };
    Ok(out)
}

/// How many groups have rewards that are not all equal: the groups `group_advantages` gives a
/// non-zero advantage (and keeps, with `filter_zero_std`).
pub fn informative_groups(rewards: &[f32], group: &[u32]) -> usize {
    let mut range: std::collections::HashMap<u32, (f32, f32)> = std::collections::HashMap::new();
    for (&g, &r) in group.iter().zip(rewards) {
        let e = range.entry(g).or_insert((r, r));
        *e = (e.0.min(r), e.1.max(r));
    }
    range.values().filter(|(lo, hi)| hi > lo).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpo_normalises_by_the_unbiased_std() {
        let r = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        let g = [0, 0, 0, 0, 1, 1];
        let a = group_advantages(&r, &g, &AdvantageConfig::grpo()).unwrap();
        // mean 0.5, unbiased std sqrt(1/3)
        let s = (1.0f32 / 3.0).sqrt();
        for (x, want) in a.advantages.iter().zip([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0]) {
            assert!((x - want).abs() < 1e-5, "{x} vs {want}");
        }
        assert!((a.frac_reward_zero_std - 2.0 / 6.0).abs() < 1e-6);
        assert!(a.keep.iter().all(|&k| k));
    }

    #[test]
    fn dr_grpo_rloo_and_filtering() {
        let r = [3.0, 1.0, 2.0, 7.0, 7.0];
        let g = [5, 5, 5, 9, 9];
        let a = group_advantages(&r, &g, &AdvantageConfig::dr_grpo()).unwrap();
        assert_eq!(a.advantages, vec![1.0, -1.0, 0.0, 0.0, 0.0]);
        let a = group_advantages(&r, &g, &AdvantageConfig::rloo()).unwrap();
        assert_eq!(a.advantages, vec![1.5, -1.5, 0.0, 0.0, 0.0]);
        let cfg = AdvantageConfig { filter_zero_std: true, ..AdvantageConfig::grpo() };
        let a = group_advantages(&r, &g, &cfg).unwrap();
        assert_eq!(a.keep, vec![true, true, true, false, false]);
        assert!((a.frac_reward_zero_std - 0.4).abs() < 1e-6);
    }
}
