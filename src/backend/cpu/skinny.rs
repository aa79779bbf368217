//! Matrix products with few rows against a `[n, k]` weight: `out[m, n] = a[m, k] · b[n, k]^T`
//! for m up to [`MAX_ROWS`]. Decoding is such a product, and it is bound by reading the weight:
//! each weight row is read once, straight from memory, and a tile of `R` rows of `a` by `C`
//! weight rows is dotted at a time, so every load feeds several multiply-adds. A general GEMM
//! would first copy the whole weight into a packed layout, reading and writing it once more.

use rayon::prelude::*;

pub const MAX_ROWS: usize = 16;

/// Weight rows per rayon task.
const ROWS_PER_TASK: usize = 48;

fn dot(a: &[f32], w: &[f32]) -> f32 {
    a.iter().zip(w).map(|(x, y)| x * y).sum()
}

/// `cols[j - j0][i] = a_i · b_j` (portable fallback).
fn block_portable(a: &[f32], b: &[f32], k: usize, m: usize, j0: usize, cols: &mut [f32]) {
    for (jj, col) in cols.chunks_exact_mut(m).enumerate() {
        let w = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
        for (i, c) in col.iter_mut().enumerate() {
            *c = dot(&a[i * k..(i + 1) * k], w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One tile kernel per instruction set: the body is the same, but with AVX-512VL the
    /// compiler has 32 vector registers, enough for an 8 x 3 tile of accumulators.
    macro_rules! tile_kernels {
        ($module:ident, $features:literal, $max_rows:literal) => {
            pub mod $module {
                use super::*;

                pub const MAX_TILE_ROWS: usize = $max_rows;

                #[target_feature(enable = $features)]
                unsafe fn hsum(v: __m256) -> f32 {
                    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                    _mm_cvtss_f32(s)
                }

                /// `out[c * m + r] = a_r · w_c` for `r < R`, `c < C`, with `a` and `w` rows `k` apart;
                /// `U` vectors of eight per row per step, so that enough FMA chains are in flight.
                #[target_feature(enable = $features)]
                pub unsafe fn tile<const R: usize, const C: usize, const U: usize>(a: *const f32, w: *const f32, k: usize, out: *mut f32, m: usize) {
                    let mut acc = [[[_mm256_setzero_ps(); U]; C]; R];
                    let step = 8 * U;
                    let mut p = 0;
                    while p + step <= k {
                        for u in 0..U {
                            let q = p + 8 * u;
                            let mut wv = [_mm256_setzero_ps(); C];
                            for c in 0..C {
                                wv[c] = _mm256_loadu_ps(w.add(c * k + q));
                                if C > 1 {
                                    // The tile after next: C short streams defeat the hardware
                                    // prefetcher, which a single long stream would not.
                                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((2 * C + c) * k + q) as *const i8);
                                }
                            }
                            for r in 0..R {
                                let av = _mm256_loadu_ps(a.add(r * k + q));
                                for c in 0..C {
                                    acc[r][c][u] = _mm256_fmadd_ps(av, wv[c], acc[r][c][u]);
                                }
                            }
                        }
                        p += step;
                    }
                    for r in 0..R {
                        for c in 0..C {
                            let mut v = acc[r][c][0];
                            for u in 1..U {
                                v = _mm256_add_ps(v, acc[r][c][u]);
                            }
                            let mut s = hsum(v);
                            for q in p..k {
                                s += *a.add(r * k + q) * *w.add(c * k + q);
                            }
                            *out.add(c * m + r) = s;
                        }
                    }
                }

                /// One row of `a` against one weight row: a single long stream through the weight,
                /// which the hardware prefetcher follows best when there is nothing to reuse.
                #[target_feature(enable = $features)]
                pub unsafe fn single(_r: usize, a: *const f32, w: *const f32, k: usize, out: *mut f32, m: usize) {
                    tile::<1, 1, 4>(a, w, k, out, m)
                }

                /// `R` rows of `a` against `C` weight rows, for `R` given at run time.
                #[target_feature(enable = $features)]
                pub unsafe fn rows<const C: usize>(r: usize, a: *const f32, w: *const f32, k: usize, out: *mut f32, m: usize) {
                    match r {
                        1 => tile::<1, C, 1>(a, w, k, out, m),
                        2 => tile::<2, C, 1>(a, w, k, out, m),
                        3 => tile::<3, C, 1>(a, w, k, out, m),
                        4 => tile::<4, C, 1>(a, w, k, out, m),
                        5 => tile::<5, C, 1>(a, w, k, out, m),
                        6 => tile::<6, C, 1>(a, w, k, out, m),
                        7 => tile::<7, C, 1>(a, w, k, out, m),
                        _ => tile::<8, C, 1>(a, w, k, out, m),
                    }
                }
            }
        };
    }

    tile_kernels!(avx2, "avx2,fma", 4);
    tile_kernels!(avx512, "avx2,fma,avx512f,avx512vl", 8);
}

/// Weight rows per tile: wide enough that each loaded `a` vector feeds several FMAs, narrow
/// enough that the accumulators stay in registers.
const TILE_COLS: usize = 3;

fn block(a: &[f32], b: &[f32], k: usize, m: usize, j0: usize, cols: &mut [f32]) {
    debug_assert!(a.len() >= m * k && cols.len() % m == 0 && b.len() >= (j0 + cols.len() / m) * k);
    #[cfg(target_arch = "x86_64")]
    {
        use x86::{avx2, avx512};
        type Rows = unsafe fn(usize, *const f32, *const f32, usize, *mut f32, usize);
        let kernels: Option<(usize, Rows, Rows, Rows)> = if std::is_x86_feature_detected!("avx512vl") && std::is_x86_feature_detected!("fma") {
            Some((avx512::MAX_TILE_ROWS, avx512::rows::<TILE_COLS>, avx512::rows::<1>, avx512::single))
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            Some((avx2::MAX_TILE_ROWS, avx2::rows::<TILE_COLS>, avx2::rows::<1>, avx2::single))
        } else {
            None
        };
        if let Some((max_rows, wide, narrow, single)) = kernels {
            let (wide, narrow) = if m == 1 { (single, single) } else { (wide, narrow) };
            let n = cols.len() / m;
            let mut jj = 0;
            while jj < n {
                let c = if m > 1 && n - jj >= TILE_COLS { TILE_COLS } else { 1 };
                let kernel = if c == TILE_COLS { wide } else { narrow };
                let mut i0 = 0;
                while i0 < m {
                    let r = (m - i0).min(max_rows);
                    // SAFETY: the CPU has the kernel's features; rows i0..i0+r of `a` and
                    // j0+jj..j0+jj+c of `b` exist (asserted above), and `cols` holds m per column.
                    unsafe { kernel(r, a.as_ptr().add(i0 * k), b.as_ptr().add((j0 + jj) * k), k, cols.as_mut_ptr().add(jj * m + i0), m) };
                    i0 += r;
                }
                jj += c;
            }
            return;
        }
    }
    block_portable(a, b, k, m, j0, cols);
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
