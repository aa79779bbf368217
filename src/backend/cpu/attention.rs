//! Attention on the CPU: exact softmax per query, one rayon task per (token, head).

use rayon::prelude::*;

use crate::backend::{CausalAttn, PagedAttn};

use super::Cpu;

/// Softmax-weighted sum over the keys/values starting at `bases` (offsets into `k`/`v`) for one
/// query head; writes `out` and returns the log-sum-exp of the scaled scores.
fn attend(out: &mut [f32], q: &[f32], bases: impl Iterator<Item = usize> + Clone, k: &[f32], v: &[f32], scale: f32) -> f32 {
    let hd = q.len();
    let scores: Vec<f32> = bases.clone().map(|b| q.iter().zip(&k[b..b + hd]).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = weights.iter().sum();
    out.fill(0.0);
    for (w, b) in weights.iter().zip(bases) {
        let w = w / sum;
        out.iter_mut().zip(&v[b..b + hd]).for_each(|(o, v)| *o += w * v);
    }
    max + sum.ln()
}

pub fn attention_paged(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], p: &PagedAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd) = (s.head_dim, s.q_dim(), s.kv_dim());
    out[..p.tokens * qd].par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / s.n_heads, i % s.n_heads);
        let kvh = h / s.group();
        let seq = p.token_seq[t] as usize;
        let table = &p.block_tables[seq * p.max_blocks..(seq + 1) * p.max_blocks];
        let bases = (0..=p.positions[t] as usize)
            .map(move |j| (table[j / p.block_size] as usize * p.block_size + j % p.block_size) * kvd + kvh * hd);
        attend(o, &q[i * hd..(i + 1) * hd], bases, k_cache, v_cache, s.scale);
    });
}

pub fn attention_causal(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], p: &CausalAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd) = (s.head_dim, s.q_dim(), s.kv_dim());
    let start = seq_starts(p.cu_seqlens, p.n_seqs, p.tokens);
    out[..p.tokens * qd]
        .par_chunks_mut(hd)
        .zip(lse[..p.tokens * s.n_heads].par_iter_mut())
        .enumerate()
        .for_each(|(i, (o, l))| {
            let (t, h) = (i / s.n_heads, i % s.n_heads);
            let kvh = h / s.group();
            let bases = (start[t]..=t).map(move |j| j * kvd + kvh * hd);
            *l = attend(o, &q[i * hd..(i + 1) * hd], bases, k, v, s.scale);
        });
}

/// The first row of each token's sequence, from the `cu_seqlens` offsets.
pub fn seq_starts(cu_seqlens: &[u32], n_seqs: usize, tokens: usize) -> Vec<usize> {
    let mut start = vec![0usize; tokens];
    for w in 0..n_seqs {
        let (a, b) = (cu_seqlens[w] as usize, cu_seqlens[w + 1] as usize);
        start[a..b].fill(a);
    }
    start
}
