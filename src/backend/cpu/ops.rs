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
    out.par_chunks_mut(4096).zip(gate.par_chunks(4096).zip(up.par_chunks(4096))).for_each(|(o, (g, u))| {
        for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + fast_exp(-g)) * u;
        }
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

/// A strided view of a row-major matrix for the `gemm` crate.
#[derive(Clone, Copy)]
pub struct View {
    ptr: *const f32,
    /// Row stride and column stride, in elements.
    rs: isize,
    cs: isize,
}

impl View {
    pub fn rows(data: &[f32], offset: usize, rs: usize) -> Self {
        View { ptr: data[offset..].as_ptr(), rs: rs as isize, cs: 1 }
    }
    pub fn t(self) -> Self {
        View { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// `dst[m,n] = beta·a[m,k]·b[k,n] (+ dst when accumulate)`, single-threaded (the caller is
/// already one task of many).
///
/// # Safety
/// Every element the shapes and strides address must lie inside the borrowed buffers.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_view(dst: &mut [f32], dst_rs: usize, m: usize, n: usize, k: usize, a: View, b: View, beta: f32, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    gemm::gemm(
        m, n, k,
        dst.as_mut_ptr(), 1, dst_rs as isize, accumulate,
        a.ptr, a.cs, a.rs,
        b.ptr, b.cs, b.rs,
        1.0, beta, false, false, false, gemm::Parallelism::None,
    );
}

/// `exp(x)` with a degree-7 polynomial after range reduction: no libm call, so the loops that
/// use it vectorise. Relative error below 2e-7; inputs below -87 give ~1e-38 instead of 0.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::fast_exp;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (a, b) = (fast_exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }
}
