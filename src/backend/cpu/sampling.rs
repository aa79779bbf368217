//! The reference sampler: temperature, top-k, top-p and min-p as probability thresholds (never a
//! sort, so the kernel can find the same thresholds by selection), then an inverse-CDF draw in
//! vocabulary order with a Philox uniform.

use rayon::prelude::*;

use crate::backend::philox;
use crate::backend::{SampleParams, Sampled};

/// The smallest probability kept by top-k: the k-th largest value (ties at the boundary kept).
fn top_k_threshold(p: &[f32], k: usize) -> f32 {
    if k == 0 || k >= p.len() {
        return 0.0;
    }
    let mut v = p.to_vec();
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// The largest threshold `tau` such that the kept mass above it (among values >= `floor`) is at
/// least `top_p` of the mass above `floor`.
fn top_p_threshold(p: &[f32], floor: f32, top_p: f32) -> f32 {
    if top_p >= 1.0 {
        return floor;
    }
    let mut kept: Vec<f32> = p.iter().copied().filter(|&x| x >= floor).collect();
    let total: f32 = kept.iter().sum();
    kept.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut acc = 0.0;
    for &x in &kept {
        acc += x;
        if acc >= top_p * total {
            return x;
        }
    }
    floor
}

pub fn sample_row(logits: &[f32], sp: &SampleParams) -> Sampled {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if sp.temperature <= 0.0 {
        let token = logits.iter().position(|&x| x == max).unwrap_or(0);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        return Sampled { token: token as u32, logprob: logits[token] - lse };
    }
    let inv_t = 1.0 / sp.temperature;
    let mut p: Vec<f32> = logits.iter().map(|x| ((x - max) * inv_t).exp()).collect();
    let z: f32 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= z);

    let tau_k = top_k_threshold(&p, sp.top_k as usize);
    let tau_p = top_p_threshold(&p, tau_k, sp.top_p);
    let p_max = 1.0 / z; // the max logit's probability
    let tau = tau_p.max(tau_k).max(sp.min_p * p_max);

    let kept_mass: f32 = p.iter().filter(|&&x| x >= tau).sum();
    let target = philox::uniform(sp.seed, sp.stream, sp.step) * kept_mass;
    let mut acc = 0.0;
    let mut token = None;
    let mut last = 0;
    for (i, &x) in p.iter().enumerate() {
        if x >= tau {
            acc += x;
            last = i;
            if acc > target {
                token = Some(i);
                break;
            }
        }
    }
    let token = token.unwrap_or(last);
    Sampled { token: token as u32, logprob: p[token].ln() }
}

pub fn sample(logits: &[f32], vocab: usize, params: &[SampleParams]) -> Vec<Sampled> {
    logits.par_chunks(vocab).zip(params.par_iter()).map(|(row, sp)| sample_row(row, sp)).collect()
}
