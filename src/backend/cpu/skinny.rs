//! Matrix products with few rows against a `[n, k]` weight: `out[m, n] = a[m, k] · b[n, k]^T`
//! for m up to [`MAX_ROWS`]. Decoding is such a product, and it is bound by reading the weight:
//! each weight row is read once, straight from memory, and dotted with up to eight rows of `a`
//! at a time (which stay in L1). A general GEMM would first copy the whole weight into a packed
//! layout, reading and writing it once more per call.

use rayon::prelude::*;

pub const MAX_ROWS: usize = 16;

/// Weight rows per rayon task.
const ROWS_PER_TASK: usize = 32;

/// Rows of `a` dotted together with one weight row.
const GROUP: usize = 8;

fn dot(a: &[f32], w: &[f32]) -> f32 {
    a.iter().zip(w).map(|(x, y)| x * y).sum()
}

/// `cols[j - j0][i] = a_i · b_j` for the rows `rows` of `a` (portable fallback).
fn block_portable(a: &[f32], b: &[f32], k: usize, rows: std::ops::Range<usize>, j0: usize, cols: &mut [f32], m: usize) {
    for (jj, col) in cols.chunks_exact_mut(m).enumerate() {
        let w = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
        for i in rows.clone() {
            col[i] = dot(&a[i * k..(i + 1) * k], w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Dots `R` rows of `a` (at `a`, stride `k`) with one weight row `w`, `U` vectors of eight
    /// at a time per row so that enough independent FMA chains are in flight.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots<const R: usize, const U: usize>(a: *const f32, w: *const f32, k: usize, out: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); U]; R];
        let step = 8 * U;
        let mut p = 0;
        while p + step <= k {
            for u in 0..U {
                let wv = _mm256_loadu_ps(w.add(p + 8 * u));
                for r in 0..R {
                    let av = _mm256_loadu_ps(a.add(r * k + p + 8 * u));
                    acc[r][u] = _mm256_fmadd_ps(av, wv, acc[r][u]);
                }
            }
            p += step;
        }
        for r in 0..R {
            let mut v = acc[r][0];
            for u in 1..U {
                v = _mm256_add_ps(v, acc[r][u]);
            }
            let mut s = hsum(v);
            for q in p..k {
                s += *a.add(r * k + q) * *w.add(q);
            }
            *out.add(r) = s;
        }
    }

    /// `cols[jj * m + i0 + r] = a_{i0+r} · b_{j0+jj}` for `r < R`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block<const R: usize, const U: usize>(a: &[f32], b: &[f32], k: usize, i0: usize, j0: usize, cols: &mut [f32], m: usize) {
        debug_assert!(a.len() >= (i0 + R) * k && cols.len() % m == 0);
        for jj in 0..cols.len() / m {
            let w = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
            dots::<R, U>(a.as_ptr().add(i0 * k), w.as_ptr(), k, cols.as_mut_ptr().add(jj * m + i0));
        }
    }
}

fn block(a: &[f32], b: &[f32], k: usize, m: usize, j0: usize, cols: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let mut i0 = 0;
        while i0 < m {
            let r = (m - i0).min(GROUP);
            // SAFETY: the CPU has AVX2 and FMA; `a` holds m rows of k and `cols` m per column.
            unsafe {
                match r {
                    1 => avx2::block::<1, 4>(a, b, k, i0, j0, cols, m),
                    2 => avx2::block::<2, 4>(a, b, k, i0, j0, cols, m),
                    3 => avx2::block::<3, 2>(a, b, k, i0, j0, cols, m),
                    4 => avx2::block::<4, 2>(a, b, k, i0, j0, cols, m),
                    5 => avx2::block::<5, 2>(a, b, k, i0, j0, cols, m),
                    6 => avx2::block::<6, 1>(a, b, k, i0, j0, cols, m),
                    7 => avx2::block::<7, 1>(a, b, k, i0, j0, cols, m),
                    _ => avx2::block::<8, 1>(a, b, k, i0, j0, cols, m),
                }
            }
            i0 += r;
        }
        return;
    }
    block_portable(a, b, k, 0..m, j0, cols, m);
}

/// `out[m,n] (+)= a[m,k] · b[n,k]^T` for `1 <= m <= MAX_ROWS`.
pub fn gemm_skinny(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    debug_assert!((1..=MAX_ROWS).contains(&m));
    // Column-major results (`cols[j * m + i]`), so each task owns a contiguous piece.
    let mut cols = vec![0f32; n * m];
    cols.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(t, cols)| block(a, b, k, m, t * ROWS_PER_TASK, cols));
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        let col = cols.iter().skip(i).step_by(m);
        if accumulate {
            row.iter_mut().zip(col).for_each(|(o, c)| *o += c);
        } else {
            row.iter_mut().zip(col).for_each(|(o, c)| *o = *c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_product_for_every_row_count() {
        let (n, k) = (37, 45);
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        for m in 1..=MAX_ROWS {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0).collect();
            let mut out = vec![1.0; m * n];
            gemm_skinny(&mut out, &a, &b, m, n, k, true);
            for i in 0..m {
                for j in 0..n {
                    let want = 1.0 + dot(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]);
                    assert!((out[i * n + j] - want).abs() < 1e-4, "m={m} ({i},{j})");
                }
            }
        }
    }
}
