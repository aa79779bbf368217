//! Backward ops of the row-wise and elementwise forward ops in `ops.rs`.
//!
//! Reductions over rows (weight and bias gradients) sum fixed blocks of rows in parallel and then
//! the block partials in order, so the result does not depend on how rayon schedules the blocks:
//! a resumed run reproduces an uninterrupted one bit for bit.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::ops::fast_exp;

/// Rows per block of a deterministic column reduction.
const REDUCE_ROWS: usize = 64;

pub fn embedding_backward(d_table: &mut [f32], d_out: &[f32], ids: &[u32], rows: usize, dim: usize) -> Result<()> {
    let vocab = d_table.len() / dim;
    for (r, g) in d_out[..rows * dim].chunks_exact(dim).enumerate() {
        let id = ids[r] as usize;
        ensure!(id < vocab, "token id {id} is outside the vocabulary ({vocab})");
        d_table[id * dim..(id + 1) * dim].iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    Ok(())
}

/// With `y = x·r·w`, `r = 1/sqrt(mean(x²) + eps)` and `g = dy·w`:
/// `dx = r·g - x·r³·mean(g·x)` and `dw = sum over rows of dy·x·r`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward(dx: &mut [f32], d_weight: &mut [f32], d_out: &[f32], x: &[f32], weight: &[f32], rows: usize, dim: usize, eps: f32) {
    let n = rows * dim;
    let partials: Vec<Vec<f32>> = dx[..n]
        .par_chunks_mut(REDUCE_ROWS * dim)
        .zip(x[..n].par_chunks(REDUCE_ROWS * dim).zip(d_out[..n].par_chunks(REDUCE_ROWS * dim)))
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0f32; dim];
            for ((dx, x), dy) in dx.chunks_exact_mut(dim).zip(x.chunks_exact(dim)).zip(dy.chunks_exact(dim)) {
                let ms = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
                let r = 1.0 / (ms + eps).sqrt();
                let gx = x.iter().zip(dy).zip(weight).map(|((x, dy), w)| dy * w * x).sum::<f32>() / dim as f32;
                let c = r * r * r * gx;
                for i in 0..dim {
                    dx[i] += r * dy[i] * weight[i] - c * x[i];
                    dw[i] += dy[i] * x[i] * r;
                }
            }
            dw
        })
        .collect();
    for p in partials {
        d_weight.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
}

pub fn add_bias_backward(d_bias: &mut [f32], dx: &[f32], rows: usize, dim: usize) {
    let partials: Vec<Vec<f32>> = dx[..rows * dim]
        .par_chunks(REDUCE_ROWS * dim)
        .map(|block| {
            let mut acc = vec![0f32; dim];
            for row in block.chunks_exact(dim) {
                acc.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            acc
        })
        .collect();
    for p in partials {
        d_bias.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
}

/// `silu(g) = g·s` with `s = sigmoid(g)`, so `silu'(g) = s·(1 + g·(1 - s))`.
pub fn swiglu_backward(d_gate: &mut [f32], d_up: &mut [f32], d_out: &[f32], gate: &[f32], up: &[f32]) {
    const N: usize = 4096;
    d_gate
        .par_chunks_mut(N)
        .zip(d_up.par_chunks_mut(N))
        .zip(d_out.par_chunks(N).zip(gate.par_chunks(N).zip(up.par_chunks(N))))
        .for_each(|((dg, du), (dy, (g, u)))| {
            for i in 0..dg.len() {
                let s = 1.0 / (1.0 + fast_exp(-g[i]));
                dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                du[i] = dy[i] * g[i] * s;
            }
        });
}
