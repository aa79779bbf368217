//! The reference sampler: temperature, top-k, top-p and min-p as probability thresholds (never a
//! sort, so the kernel can find the same thresholds by selection), then an inverse-CDF draw in
//! vocabulary order with a Philox uniform.
//!
//! Every float sum that decides a draw (the softmax normaliser, top-p's masses, the kept mass
//! and the running sum of the draw) is taken in the order the `sample` kernel takes it (one block
//! of [`THREADS`] threads per row; see [`strided_sum`] and [`chunk_scan`]), so that both backends
//! draw the same token from the same logits, not merely the same distribution.

use rayon::prelude::*;

use crate::backend::philox;
use crate::backend::{SampleParams, Sampled};

/// Threads of the kernel's block, and lanes of a warp.
const THREADS: usize = 1024;
const LANES: usize = 32;

/// The kernel's warp reduction: a butterfly, `v[i] + v[i + o]` for o = 16, 8, 4, 2, 1.
fn butterfly(v: &[f32]) -> f32 {
    let mut w: [f32; LANES] = v.try_into().expect("32 lanes");
    let mut o = LANES / 2;
    while o > 0 {
        for i in 0..o {
            w[i] += w[i + o];
        }
        o /= 2;
    }
    w[0]
}

/// The kernel's `block_sum` of one value per thread: a butterfly per warp, then over the warps.
fn block_sum(per_thread: &[f32; THREADS]) -> f32 {
    let warps: Vec<f32> = per_thread.chunks(LANES).map(butterfly).collect();
    butterfly(&warps)
}

/// `Σ f(i)` for i < n as the kernel sums it: thread t adds i = t, t + THREADS, ... in order,
/// then `block_sum`.
fn strided_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut part = [0f32; THREADS];
    for i in 0..n {
        part[i % THREADS] += f(i);
    }
    block_sum(&part)
}

/// The kernel's inclusive scan within a warp (Hillis–Steele: `x[i] += x[i - o]` for
/// o = 1, 2, 4, 8, 16, every lane reading the values before the step).
fn warp_scan(x: &mut [f32]) {
    let mut o = 1;
    while o < LANES {
        for i in (o..LANES).rev() {
            x[i] += x[i - o];
        }
        o *= 2;
    }
}

/// The kernel's `block_exclusive_scan`: the sum of the values of the threads before each one,
/// with the kernel's roundings (`(warp prefix + inclusive) - own`).
fn chunk_scan(v: &[f32; THREADS]) -> [f32; THREADS] {
    let mut incl = *v;
    incl.chunks_mut(LANES).for_each(warp_scan);
    let totals: Vec<f32> = (0..THREADS / LANES).map(|w| incl[w * LANES + LANES - 1]).collect();
    let mut prefix = totals.clone();
    warp_scan(&mut prefix);
    let mut before = [0f32; THREADS];
    for t in 0..THREADS {
        let w = t / LANES;
        before[t] = ((prefix[w] - totals[w]) + incl[t]) - v[t];
    }
    before
}

/// The smallest probability kept by top-k: the k-th largest value (ties at the boundary kept).
fn top_k_threshold(p: &[f32], k: usize) -> f32 {
    if k == 0 || k >= p.len() {
        return 0.0;
    }
    let mut v = p.to_vec();
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// The largest threshold `tau` such that the mass of the values `>= tau` is at least `top_p` of
/// the mass of the values `>= floor`. Masses are taken in the kernel's order; they only shrink as
/// `tau` grows, so the answer is the largest value of `p` that passes, found by bisection.
fn top_p_threshold(p: &[f32], floor: f32, top_p: f32) -> f32 {
    if top_p >= 1.0 {
        return floor;
    }
    let mass = |v: f32| strided_sum(p.len(), |i| if p[i] >= v { p[i] } else { 0.0 });
    let target = top_p * mass(floor);
    let mut values: Vec<f32> = p.iter().copied().filter(|&x| x >= floor).collect();
    values.sort_unstable_by(f32::total_cmp);
    values.dedup();
    // values[lo] passes (the smallest kept value has the whole mass); find the last that does.
    let (mut lo, mut hi) = (0, values.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if mass(values[mid]) >= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    values.get(lo).copied().unwrap_or(floor)
}

/// The inverse-CDF draw over the values `>= tau`: thread t of the kernel owns the contiguous
/// chunk t of the row, the kept mass is the scan's total, and the lowest index whose running sum
/// (from its chunk's prefix) exceeds `u · mass` is drawn; the last kept index if none does.
fn draw(p: &[f32], tau: f32, u: f32) -> Option<usize> {
    let chunk = p.len().div_ceil(THREADS);
    let range = |t: usize| (t * chunk).min(p.len())..((t + 1) * chunk).min(p.len());
    let mut local = [0f32; THREADS];
    let mut last = None;
    for (t, sum) in local.iter_mut().enumerate() {
        for i in range(t) {
            if p[i] >= tau {
                *sum += p[i];
                last = Some(i);
            }
        }
    }
    let before = chunk_scan(&local);
    let target = u * (before[THREADS - 1] + local[THREADS - 1]);
    for t in 0..THREADS {
        if local[t] > 0.0 && before[t] + local[t] > target {
            let mut run = before[t];
            for i in range(t) {
                if p[i] >= tau {
                    run += p[i];
                    if run > target {
                        return Some(i);
                    }
                }
            }
        }
    }
    last
}

pub fn sample_row(logits: &[f32], sp: &SampleParams) -> Sampled {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if sp.temperature <= 0.0 {
        let token = logits.iter().position(|&x| x == max).unwrap_or(0);
        let lse = max + strided_sum(logits.len(), |i| (logits[i] - max).exp()).ln();
        return Sampled { token: token as u32, logprob: logits[token] - lse };
    }
    let inv_t = 1.0 / sp.temperature;
    let mut p: Vec<f32> = logits.iter().map(|x| ((x - max) * inv_t).exp()).collect();
    let z = strided_sum(p.len(), |i| p[i]);
    p.iter_mut().for_each(|x| *x /= z);

    let tau_k = top_k_threshold(&p, sp.top_k as usize);
    let tau_p = top_p_threshold(&p, tau_k, sp.top_p);
    let p_max = 1.0 / z; // the max logit's probability
    let tau = tau_p.max(tau_k).max(sp.min_p * p_max);

    let u = philox::uniform(sp.seed, sp.stream, sp.step);
    // nothing kept (min_p > 1): the most likely token, as the kernel does
    let token = draw(&p, tau, u).unwrap_or_else(|| logits.iter().position(|&x| x == max).unwrap_or(0));
    Sampled { token: token as u32, logprob: p[token].ln() }
}

pub fn sample(logits: &[f32], vocab: usize, params: &[SampleParams]) -> Vec<Sampled> {
    logits.par_chunks(vocab).zip(params.par_iter()).map(|(row, sp)| sample_row(row, sp)).collect()
}
