//! Attention on the CPU: exact softmax. Decoding over the paged cache runs one rayon task per
//! (token, head); causal attention over packed sequences is blocked and uses matrix products.

use rayon::prelude::*;

use crate::backend::{CausalAttn, PagedAttn};

use super::ops::{fast_exp, gemm_view, View};
use super::Cpu;

/// `a · b` in 32 independent lanes (four vectors of eight), so the compiler can vectorise it (a
/// plain sum of floats must keep its order and cannot be) and the additions do not wait on
/// each other.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0f32; LANES];
    let split = a.len() / LANES * LANES;
    for (x, y) in a[..split].chunks_exact(LANES).zip(b[..split].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Softmax-weighted sums over the keys/values starting at `bases` (offsets into `k`/`v`) for the
/// query heads sharing one key/value head (`q` and `out` are `[group, hd]`), so that each key and
/// value row is read once for the whole group. Plain loops rather than closures, so that the
/// body takes the instruction set of the function it is inlined into. `scores` is scratch.
#[inline(always)]
fn attend_impl(out: &mut [f32], q: &[f32], hd: usize, bases: &[usize], k: &[f32], v: &[f32], scale: f32, scores: &mut Vec<f32>) {
    let group = q.len() / hd;
    let n = bases.len();
    scores.clear();
    scores.resize(group * n, 0.0);
    for (j, &b) in bases.iter().enumerate() {
        let key = &k[b..b + hd];
        for g in 0..group {
            scores[g * n + j] = dot(&q[g * hd..(g + 1) * hd], key) * scale;
        }
    }
    for g in 0..group {
        let row = &mut scores[g * n..(g + 1) * n];
        let mut max = f32::NEG_INFINITY;
        for &x in row.iter() {
            max = max.max(x);
        }
        let mut sum = 0.0;
        for w in row.iter_mut() {
            *w = fast_exp(*w - max);
            sum += *w;
        }
        let inv = 1.0 / sum;
        for w in row.iter_mut() {
            *w *= inv;
        }
    }
    // Per head and per 64 output columns, summed in a fixed-size local that stays in registers.
    const COLS: usize = 64;
    for g in 0..group {
        let weights = &scores[g * n..(g + 1) * n];
        for c0 in (0..hd).step_by(COLS) {
            let width = COLS.min(hd - c0);
            let mut acc = [0f32; COLS];
            if width == COLS {
                for (&w, &b) in weights.iter().zip(bases) {
                    let value: &[f32; COLS] = v[b + c0..b + c0 + COLS].try_into().unwrap();
                    for (a, x) in acc.iter_mut().zip(value) {
                        *a += w * x;
                    }
                }
            } else {
                for (&w, &b) in weights.iter().zip(bases) {
                    for (a, x) in acc[..width].iter_mut().zip(&v[b + c0..b + c0 + width]) {
                        *a += w * x;
                    }
                }
            }
            out[g * hd + c0..g * hd + c0 + width].copy_from_slice(&acc[..width]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(out: &mut [f32], q: &[f32], hd: usize, bases: &[usize], k: &[f32], v: &[f32], scale: f32, scores: &mut Vec<f32>) {
    attend_impl(out, q, hd, bases, k, v, scale, scores)
}

fn attend(out: &mut [f32], q: &[f32], hd: usize, bases: &[usize], k: &[f32], v: &[f32], scale: f32, scores: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `attend_avx2` is compiled for.
        return unsafe { attend_avx2(out, q, hd, bases, k, v, scale, scores) };
    }
    attend_impl(out, q, hd, bases, k, v, scale, scores)
}

/// Attention over the paged cache. Runs of at least [`CHUNK`] consecutive tokens of one
/// sequence (a prompt continuing a cached sequence, such as an agent's observation) are attended
/// with matrix products over the gathered keys and values; other tokens (decoding) one rayon
/// task per (token, key/value head).
pub fn attention_paged(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], p: &PagedAttn<Cpu>) {
    let s = p.shape;
    let (hd, qd, kvd, group) = (s.head_dim, s.q_dim(), s.kv_dim(), s.group());
    let runs = chunk_runs(p);
    let mut in_chunk = vec![false; p.tokens];
    for &(t0, n) in &runs {
        in_chunk[t0..t0 + n].iter_mut().for_each(|x| *x = true);
        attend_chunk(out, q, k_cache, v_cache, p, t0, n);
    }
    let heads = group * hd; // the query heads of one kv head are contiguous
    out[..p.tokens * qd].par_chunks_mut(heads).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(bases, scores), (i, o)| {
            let (t, kvh) = (i / s.n_kv_heads, i % s.n_kv_heads);
            if in_chunk[t] {
                return;
            }
            let seq = p.token_seq[t] as usize;
            let table = &p.block_tables[seq * p.max_blocks..(seq + 1) * p.max_blocks];
            bases.clear();
            for j in 0..=p.positions[t] as usize {
                bases.push((table[j / p.block_size] as usize * p.block_size + j % p.block_size) * kvd + kvh * hd);
            }
            attend(o, &q[i * heads..(i + 1) * heads], hd, bases, k_cache, v_cache, s.scale, scores);
        },
    );
}

/// Softmax in place over the first `visible` scores of a row, zeros after them (the keys a
/// query may not see); returns the log-sum-exp of the visible scores.
fn causal_softmax(row: &mut [f32], visible: usize) -> f32 {
    let max = row[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in &mut row[..visible] {
        *x = fast_exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    row[..visible].iter_mut().for_each(|x| *x *= inv);
    row[visible..].fill(0.0);
    max + sum.ln()
}

/// Shortest run of one sequence's consecutive tokens attended as a chunk.
const CHUNK: usize = 8;

/// `(first token, length)` of every run of at least `CHUNK` tokens of one sequence at
/// consecutive positions.
fn chunk_runs(p: &PagedAttn<Cpu>) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut t0 = 0;
    for t in 1..=p.tokens {
        let continues = t < p.tokens && p.token_seq[t] == p.token_seq[t - 1] && p.positions[t] == p.positions[t - 1] + 1;
        if !continues {
            if t - t0 >= CHUNK {
                runs.push((t0, t - t0));
            }
            t0 = t;
        }
    }
    runs
}

/// Tokens `t0..t0+n` of one sequence: its keys and values gathered from the cache, then per key/
/// value head `S = scale·Q·Kᵀ`, a causal softmax (row i sees positions up to its own) and
/// `O = P·V`, in blocks of query rows.
fn attend_chunk(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], p: &PagedAttn<Cpu>, t0: usize, n: usize) {
    let s = p.shape;
    let (hd, qd, kvd, group) = (s.head_dim, s.q_dim(), s.kv_dim(), s.group());
    let seq = p.token_seq[t0] as usize;
    let first = p.positions[t0] as usize;
    let ctx = first + n;
    let table = &p.block_tables[seq * p.max_blocks..(seq + 1) * p.max_blocks];
    let mut keys = vec![0f32; ctx * kvd];
    let mut values = vec![0f32; ctx * kvd];
    for j in 0..ctx {
        let slot = table[j / p.block_size] as usize * p.block_size + j % p.block_size;
        keys[j * kvd..(j + 1) * kvd].copy_from_slice(&k_cache[slot * kvd..(slot + 1) * kvd]);
        values[j * kvd..(j + 1) * kvd].copy_from_slice(&v_cache[slot * kvd..(slot + 1) * kvd]);
    }
    // Per kv head: the outputs `[n, group, hd]` of its query heads.
    let per_head: Vec<Vec<f32>> = (0..s.n_kv_heads)
        .into_par_iter()
        .map(|kh| {
            let mut o = vec![0f32; n * group * hd];
            let mut prob = vec![0f32; BLOCK * ctx];
            let kv = View::rows(&keys, kh * hd, kvd);
            let vv = View::rows(&values, kh * hd, kvd);
            for gi in 0..group {
                let h = kh * group + gi;
                for i0 in (0..n).step_by(BLOCK) {
                    let bq = BLOCK.min(n - i0);
                    let width = first + i0 + bq; // keys the block's last row sees
                    let qb = View::rows(q, (t0 + i0) * qd + h * hd, qd);
                    // SAFETY: q rows t0+i0..t0+i0+bq of head h, and `width` <= ctx key rows, are in
                    // bounds; prob holds bq rows of stride width.
                    unsafe { gemm_view(&mut prob, width, bq, width, hd, qb, kv.t(), s.scale, false) };
                    for r in 0..bq {
                        causal_softmax(&mut prob[r * width..(r + 1) * width], first + i0 + r + 1);
                    }
                    // SAFETY: o rows i0..i0+bq with stride group·hd are inside o.
                    unsafe { gemm_view(&mut o[(i0 * group + gi) * hd..], group * hd, bq, hd, width, View::rows(&prob, 0, width), vv, 1.0, false) };
                }
            }
            o
        })
        .collect();
    for (kh, o) in per_head.iter().enumerate() {
        for r in 0..n {
            let row = (t0 + r) * qd + kh * group * hd;
            out[row..row + group * hd].copy_from_slice(&o[r * group * hd..(r + 1) * group * hd]);
        }
    }
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
                        l[(i0 + r) * group + gi] = causal_softmax(&mut prob[r * n..(r + 1) * n], i0 + r + 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AttnShape;

    /// Paged attention against a naive softmax over each sequence's keys in order, across head
    /// sizes that do and do not fill the vector widths, with and without grouped queries, for
    /// decoding tokens and for a chunk of one sequence's consecutive tokens (a continued prompt).
    #[test]
    fn paged_attention_matches_a_naive_softmax() {
        let wave = |i: usize, f: f32| ((i as f32) * f).sin();
        for (hd, n_heads, n_kv_heads) in [(16, 4, 4), (64, 9, 3), (80, 4, 2), (128, 2, 1)] {
            let shape = AttnShape { n_heads, n_kv_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
            let (qd, kvd, block_size, max_blocks) = (shape.q_dim(), shape.kv_dim(), 4, 6);
            // Two sequences; their blocks are interleaved in the cache, in reverse order.
            let tables: Vec<u32> = (0..2 * max_blocks as u32).map(|b| 2 * max_blocks as u32 - 1 - b).collect();
            let slots = 2 * max_blocks * block_size;
            let k_cache: Vec<f32> = (0..slots * kvd).map(|i| wave(i, 0.37)).collect();
            let v_cache: Vec<f32> = (0..slots * kvd).map(|i| wave(i, 0.61)).collect();
            // A decoding token of sequence 0, then 11 consecutive tokens of sequence 1 (a chunk
            // crossing block and query-block edges), then a decoding token of sequence 0.
            let mut positions = vec![13u32];
            let mut token_seq = vec![0u32];
            positions.extend(9..20u32);
            token_seq.extend([1u32; 11]);
            positions.push(5);
            token_seq.push(0);
            let tokens = positions.len();
            let q: Vec<f32> = (0..tokens * qd).map(|i| wave(i, 0.13)).collect();
            let mut out = vec![0f32; tokens * qd];
            let p = PagedAttn::<Cpu> { tokens, shape, block_size, max_blocks, positions: &positions, token_seq: &token_seq, block_tables: &tables };
            attention_paged(&mut out, &q, &k_cache, &v_cache, &p);
            for t in 0..tokens {
                let seq = token_seq[t] as usize;
                let slot = |j: usize| tables[seq * max_blocks + j / block_size] as usize * block_size + j % block_size;
                for h in 0..n_heads {
                    let kvh = h / shape.group();
                    let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    let n = positions[t] as usize + 1;
                    let scores: Vec<f64> = (0..n)
                        .map(|j| (0..hd).map(|d| qh[d] as f64 * k_cache[slot(j) * kvd + kvh * hd + d] as f64).sum::<f64>() * shape.scale as f64)
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for d in 0..hd {
                        let want: f64 = (0..n).map(|j| (scores[j] - max).exp() / z * v_cache[slot(j) * kvd + kvh * hd + d] as f64).sum();
                        let got = out[t * qd + h * hd + d] as f64;
                        assert!((got - want).abs() < 1e-5, "hd {hd} token {t} head {h} dim {d}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
