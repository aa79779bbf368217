//! Backward of causal attention on the CPU, blocked over queries and built from matrix products.
//!
//! One rayon task per (sequence, key/value head) owns the gradients of that head's keys and
//! values; it walks the query heads of its group in blocks of `BLOCK` query rows, recomputing
//! the probabilities from the saved log-sum-exp (as flash attention does):
//!
//! ```text
//! P  = exp(scale·Q·Kᵀ - lse)        (causal mask: P = 0 above the diagonal)
//! dP = dO·Vᵀ,  D = rowsum(dO ∘ O),  dS = P ∘ (dP - D)
//! dQ = scale·dS·K,  dK += scale·dSᵀ·Q,  dV += Pᵀ·dO
//! ```
//!
//! Scratch is `BLOCK × sequence length` per task, never quadratic in the sequence.

use rayon::prelude::*;

use crate::backend::CausalAttn;

use super::ops::{fast_exp, gemm_view, View};
use super::Cpu;

const BLOCK: usize = super::attention::BLOCK;

/// Gradients of one (sequence, kv head): `dq` as `[len, group, hd]`, `dk`/`dv` as `[len, hd]`.
struct HeadGrads {
    seq_start: usize,
    len: usize,
    kv_head: usize,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
pub fn attention_causal_backward(dq: &mut [f32], dk: &mut [f32], dv: &mut [f32], d_out: &[f32], q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], p: &CausalAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd, nh, group) = (s.head_dim, s.q_dim(), s.kv_dim(), s.n_heads, s.group());
    let t = p.tokens;
    assert!(q.len() >= t * qd && d_out.len() >= t * qd && out.len() >= t * qd && k.len() >= t * kvd && v.len() >= t * kvd && lse.len() >= t * nh);

    // D = rowsum(dO ∘ O) per token and head.
    let mut delta = vec![0f32; t * nh];
    delta.par_chunks_mut(nh).enumerate().for_each(|(row, d)| {
        for (h, d) in d.iter_mut().enumerate() {
            let o = row * qd + h * hd;
            *d = d_out[o..o + hd].iter().zip(&out[o..o + hd]).map(|(a, b)| a * b).sum();
        }
    });

    let tasks: Vec<(usize, usize, usize)> = (0..p.n_seqs)
        .flat_map(|sq| {
            let (a, b) = (p.cu_seqlens[sq] as usize, p.cu_seqlens[sq + 1] as usize);
            (0..s.n_kv_heads).map(move |kh| (a, b - a, kh))
        })
        .filter(|&(_, len, _)| len > 0)
        .collect();

    let grads: Vec<HeadGrads> = tasks
        .into_par_iter()
        .map(|(a, len, kh)| {
            let mut g = HeadGrads { seq_start: a, len, kv_head: kh, dq: vec![0.0; len * group * hd], dk: vec![0.0; len * hd], dv: vec![0.0; len * hd] };
            let mut prob = vec![0f32; BLOCK * len];
            let mut dprob = vec![0f32; BLOCK * len];
            let kv = View::rows(k, a * kvd + kh * hd, kvd);
            let vv = View::rows(v, a * kvd + kh * hd, kvd);
            for gi in 0..group {
                let h = kh * group + gi;
                for i0 in (0..len).step_by(BLOCK) {
                    let bq = BLOCK.min(len - i0);
                    let n = i0 + bq; // keys 0..n are visible to some query of the block
                    let qb = View::rows(q, (a + i0) * qd + h * hd, qd);
                    let dob = View::rows(d_out, (a + i0) * qd + h * hd, qd);
                    // SAFETY: q/d_out rows a+i0..a+n and k/v rows a..a+n of this head are in
                    // bounds (asserted above); prob/dprob hold bq rows of stride n ≤ len.
                    unsafe {
                        gemm_view(&mut prob, n, bq, n, hd, qb, kv.t(), s.scale, false);
                        gemm_view(&mut dprob, n, bq, n, hd, dob, vv.t(), 1.0, false);
                    }
                    for r in 0..bq {
                        let row = a + i0 + r;
                        let (l, dl) = (lse[row * nh + h], delta[row * nh + h]);
                        let pr = &mut prob[r * n..(r + 1) * n];
                        let dp = &mut dprob[r * n..(r + 1) * n];
                        let visible = i0 + r + 1;
                        for j in 0..visible {
                            let pj = fast_exp(pr[j] - l);
                            pr[j] = pj;
                            dp[j] = pj * (dp[j] - dl);
                        }
                        pr[visible..].fill(0.0);
                        dp[visible..].fill(0.0);
                    }
                    let ds = View::rows(&dprob, 0, n);
                    let pv = View::rows(&prob, 0, n);
                    // SAFETY: as above; g.dq rows i0..i0+bq with stride group·hd, g.dk/g.dv
                    // rows 0..n with stride hd are inside their buffers.
                    unsafe {
                        gemm_view(&mut g.dq[(i0 * group + gi) * hd..], group * hd, bq, hd, n, ds, kv, s.scale, false);
                        gemm_view(&mut g.dk, hd, n, hd, bq, ds.t(), qb, s.scale, true);
                        gemm_view(&mut g.dv, hd, n, hd, bq, pv.t(), dob, 1.0, true);
                    }
                }
            }
            g
        })
        .collect();

    for g in grads {
        for r in 0..g.len {
            let row = g.seq_start + r;
            let qo = row * qd + g.kv_head * group * hd;
            dq[qo..qo + group * hd].copy_from_slice(&g.dq[r * group * hd..(r + 1) * group * hd]);
            let ko = row * kvd + g.kv_head * hd;
            dk[ko..ko + hd].copy_from_slice(&g.dk[r * hd..(r + 1) * hd]);
            dv[ko..ko + hd].copy_from_slice(&g.dv[r * hd..(r + 1) * hd]);
        }
    }
}
