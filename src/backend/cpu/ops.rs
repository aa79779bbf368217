//! Row-wise and elementwise ops of the CPU backend.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use crate::backend::{Gemm, Rope};

/// Rows per rayon task for cheap row-wise ops: enough work to amortise the task.
fn rows_per_task(dim: usize) -> usize {
    (16384 / dim.max(1)).max(1)
}

pub fn embedding(out: &mut [f32], table: &[f32], ids: &[u32], rows: usize, dim: usize) -> Result<()> {
    let vocab = table.len() / dim;
    for (r, row) in out[..rows * dim].chunks_exact_mut(dim).enumerate() {
        let id = ids[r] as usize;
        ensure!(id < vocab, "token id {id} is outside the vocabulary ({vocab})");
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    }
    Ok(())
}

pub fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32], rows: usize, dim: usize, eps: f32) {
    out[..rows * dim]
        .par_chunks_mut(dim)
        .with_min_len(rows_per_task(dim))
        .zip(x[..rows * dim].par_chunks(dim))
        .for_each(|(o, x)| {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                *o = x * inv * w;
            }
        });
}

pub fn add_bias(x: &mut [f32], bias: &[f32], rows: usize, dim: usize) {
    for row in x[..rows * dim].chunks_exact_mut(dim) {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
}

pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.par_iter_mut().with_min_len(4096).zip(gate.par_iter().zip(up.par_iter())).for_each(|(o, (g, u))| {
        *o = g / (1.0 + (-g).exp()) * u;
    });
}

/// Rotates each head of each row by its position; `sign = -1` applies the inverse rotation
/// (the backward pass of RoPE is the rotation by the negative angle).
pub fn rope(x: &mut [f32], positions: &[u32], r: Rope, sign: f32) {
    let half = r.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / r.theta.powf((2 * i) as f32 / r.head_dim as f32)).collect();
    let width = r.n_heads * r.head_dim;
    x[..r.rows * width].par_chunks_mut(width).with_min_len(rows_per_task(width)).enumerate().for_each(|(row, xs)| {
        let pos = positions[row] as f32;
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq.iter().map(|f| {
            let a = pos * f;
            (a.cos(), sign * a.sin())
        }).unzip();
        for head in xs.chunks_exact_mut(r.head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * cos[i] - b * sin[i];
                hi[i] = b * cos[i] + a * sin[i];
            }
        }
    });
}

/// `out (+)= op(a) · op(b)` through the `gemm` crate, row-major with strides for transposes.
pub fn gemm(out: &mut [f32], a: &[f32], b: &[f32], g: Gemm) -> Result<()> {
    let Gemm { m, n, k, trans_a, trans_b, accumulate } = g;
    ensure!(out.len() >= m * n && a.len() >= m * k && b.len() >= n * k, "gemm {g:?}: buffers of {}, {}, {} are too small", out.len(), a.len(), b.len());
    if m == 0 || n == 0 {
        return Ok(());
    }
    if !trans_a && trans_b && m <= super::skinny::MAX_ROWS {
        super::skinny::gemm_skinny(out, a, b, m, n, k, accumulate);
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return Ok(());
    }
    // Element (i, p) of op(a) and (p, j) of op(b), as (column stride, row stride).
    let (a_cs, a_rs) = if trans_a { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if trans_b { (k as isize, 1) } else { (1, n as isize) };
    let threads = if m * n * k < 64 * 64 * 64 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(0) };
    // SAFETY: the bounds of all three buffers were checked above for these shapes and strides.
    unsafe {
        gemm::gemm(
            m, n, k,
            out.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr(), a_cs, a_rs,
            b.as_ptr(), b_cs, b_rs,
            1.0, 1.0, false, false, false, threads,
        );
    }
    Ok(())
}
