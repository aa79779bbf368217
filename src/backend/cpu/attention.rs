//! Attention on the CPU: exact softmax. Decoding over the paged cache runs one rayon task per
//! (token, head); causal attention over packed sequences is blocked and uses matrix products.

use rayon::prelude::*;

use crate::backend::{CausalAttn, PagedAttn};

use super::ops::{fast_exp, gemm_view, View};
use super::Cpu;

/// `a · b` in eight independent lanes, so the compiler can vectorise it (a plain sum of floats
/// must keep its order and cannot be).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let split = a.len() / 8 * 8;
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Softmax-weighted sum over the keys/values starting at `bases` (offsets into `k`/`v`) for one
/// query head; writes `out` and returns the log-sum-exp of the scaled scores.
#[inline(always)]
fn attend_impl(out: &mut [f32], q: &[f32], bases: &[usize], k: &[f32], v: &[f32], scale: f32) -> f32 {
    let hd = q.len();
    let mut weights: Vec<f32> = bases.iter().map(|&b| dot(q, &k[b..b + hd]) * scale).collect();
    let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for w in &mut weights {
        *w = fast_exp(*w - max);
        sum += *w;
    }
    out.fill(0.0);
    let inv = 1.0 / sum;
    for (w, &b) in weights.iter().zip(bases) {
        let w = w * inv;
        out.iter_mut().zip(&v[b..b + hd]).for_each(|(o, v)| *o += w * v);
    }
    max + sum.ln()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(out: &mut [f32], q: &[f32], bases: &[usize], k: &[f32], v: &[f32], scale: f32) -> f32 {
    attend_impl(out, q, bases, k, v, scale)
}

fn attend(out: &mut [f32], q: &[f32], bases: &[usize], k: &[f32], v: &[f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `attend_avx2` is compiled for.
        return unsafe { attend_avx2(out, q, bases, k, v, scale) };
    }
    attend_impl(out, q, bases, k, v, scale)
}

pub fn attention_paged(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], p: &PagedAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd) = (s.head_dim, s.q_dim(), s.kv_dim());
    out[..p.tokens * qd].par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        let kvh = h / s.group();
        let seq = p.token_seq[t] as usize;
        let table = &p.block_tables[seq * p.max_blocks..(seq + 1) * p.max_blocks];
        let bases: Vec<usize> = (0..=p.positions[t] as usize)
            .map(|j| (table[j / p.block_size] as usize * p.block_size + j % p.block_size) * kvd + kvh * hd)
            .collect();
        attend(o, &q[i * hd..(i + 1) * hd], &bases, k_cache, v_cache, s.scale);
    });
}

/// Query rows per block of the causal attention (forward and backward).
pub const BLOCK: usize = 64;

/// Causal attention over packed sequences, blocked over queries and built from matrix products:
/// one rayon task per (sequence, key/value head) computes `S = scale·Q·Kᵀ` for a block of query
/// rows against the keys they can see, the softmax in place, and `O = P·V`. Scratch is
/// `BLOCK × sequence length` per task.
pub fn attention_causal(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], p: &CausalAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd, nh, group) = (s.head_dim, s.q_dim(), s.kv_dim(), s.n_heads, s.group());
    let t = p.tokens;
    assert!(q.len() >= t * qd && k.len() >= t * kvd && v.len() >= t * kvd && out.len() >= t * qd && lse.len() >= t * nh);
    let tasks: Vec<(usize, usize, usize)> = (0..p.n_seqs)
        .flat_map(|sq| {
            let (a, b) = (p.cu_seqlens[sq] as usize, p.cu_seqlens[sq + 1] as usize);
            (0..s.n_kv_heads).map(move |kh| (a, b - a, kh))
        })
        .filter(|&(_, len, _)| len > 0)
        .collect();
    // Per task: first row, length, kv head, then the outputs `[len, group, hd]` and
    // log-sum-exps `[len, group]` of its query heads.
    type HeadOut = (usize, usize, usize, Vec<f32>, Vec<f32>);
    let results: Vec<HeadOut> = tasks
        .into_par_iter()
        .map(|(a, len, kh)| {
            let mut o = vec![0f32; len * group * hd];
            let mut l = vec![0f32; len * group];
            let mut prob = vec![0f32; BLOCK * len];
            let kv = View::rows(k, a * kvd + kh * hd, kvd);
            let vv = View::rows(v, a * kvd + kh * hd, kvd);
            for gi in 0..group {
                let h = kh * group + gi;
                for i0 in (0..len).step_by(BLOCK) {
                    let bq = BLOCK.min(len - i0);
                    let n = i0 + bq;
                    let qb = View::rows(q, (a + i0) * qd + h * hd, qd);
                    // SAFETY: q rows a+i0..a+n and k rows a..a+n of this head are in bounds
                    // (asserted above); prob holds bq rows of stride n <= len.
                    unsafe { gemm_view(&mut prob, n, bq, n, hd, qb, kv.t(), s.scale, false) };
                    for r in 0..bq {
                        let visible = i0 + r + 1;
                        let row = &mut prob[r * n..(r + 1) * n];
                        let max = row[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f32;
                        for x in &mut row[..visible] {
                            *x = fast_exp(*x - max);
                            sum += *x;
                        }
                        let inv = 1.0 / sum;
                        row[..visible].iter_mut().for_each(|x| *x *= inv);
                        row[visible..].fill(0.0);
                        l[(i0 + r) * group + gi] = max + sum.ln();
                    }
                    // SAFETY: o rows i0..i0+bq with stride group·hd are inside o.
                    unsafe { gemm_view(&mut o[(i0 * group + gi) * hd..], group * hd, bq, hd, n, View::rows(&prob, 0, n), vv, 1.0, false) };
                }
            }
            (a, len, kh, o, l)
        })
        .collect();
    for (a, len, kh, o, l) in results {
        for r in 0..len {
            let row = a + r;
            out[row * qd + kh * group * hd..row * qd + (kh + 1) * group * hd].copy_from_slice(&o[r * group * hd..(r + 1) * group * hd]);
            lse[row * nh + kh * group..row * nh + (kh + 1) * group].copy_from_slice(&l[r * group..(r + 1) * group]);
        }
    }
}
