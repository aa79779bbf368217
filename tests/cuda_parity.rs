//! Every CUDA op against the CPU reference backend on random inputs of several shapes (odd sizes
//! included), and the fixture models' logits against transformers. Without a GPU (or without
//! kernels in this build) each test prints why it is skipped and passes.
//!
//! Inputs are rounded to bf16 before either backend sees them, so the comparison measures the
//! kernel, not the storage format of its inputs. A value passes when
//! `|gpu - cpu| <= atol + RTOL * |cpu|`, with `atol` from the table in [`tol`].

#[macro_use]
mod gpu_support;

use gpu_support::{max_abs, Rng};
use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::cuda::{CudaBackend, DType};
use atomrl::backend::{AdamW, AttnShape, Backend, CausalAttn, Gemm, PagedAttn, Rope, SampleParams};

// ---- tolerances

/// Relative tolerance for bf16 outputs.
const RTOL: f32 = 0.08;
/// Spacing of bf16 numbers in [1, 2): 2^-7 (8 significand bits, 7 stored). One rounding to bf16
/// moves a value by at most half of it, relative.
const BF16_ULP: f32 = 1.0 / 128.0;
/// Spacing of f32 numbers in [1, 2).
const F32_ULP: f32 = f32::EPSILON;

/// Absolute tolerance per op, derived from how many bf16 roundings of O(1) values its output goes
/// through (the relative part, RTOL, covers large values).
fn tol(op: &str) -> f32 {
    match op {
        // pure data movement: exact
        "embedding" | "kv_cache_write" | "copy" | "cast" | "fill" => 0.0,
        // one rounding of the f32 result to bf16 (add_rms_norm also rounds the residual)
        "rms_norm" | "qk_norm" | "add" | "add_bias" | "swiglu" | "rope" | "gemm" => BF16_ULP,
        "add_rms_norm" => 2.0 * BF16_ULP,
        // rope then rope_backward, each rounding its output to bf16
        "rope_roundtrip" => 2.0 * BF16_ULP,
        // P rounded to bf16 before the P·V product, then the output rounded
        "attention_causal" | "attention_paged" => 2.0 * BF16_ULP,
        // f32 output of a sum of bf16 products accumulated in f32
        "attention_lse" => 64.0 * F32_ULP,
        // f32 log of an f32 probability, same arithmetic as the CPU but sums in another order
        "sample_logprob" => 1e-5,
        // logits of a whole model: one bf16 rounding per op, about 10 ops per layer, 2 layers
        "fixture_logits" => 16.0 * BF16_ULP,
        other => panic!("no tolerance for {other}"),
    }
}

fn check(op: &str, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{op} {what}: lengths differ");
    let atol = tol(op);
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let allowed = atol + RTOL * w.abs();
        let excess = err - allowed;
        if (excess > 0.0 || excess.is_nan()) && (excess > worst.1 || worst.1 == 0.0) {
            worst = (i, if excess.is_nan() { f32::INFINITY } else { excess });
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!("{op} {what}: element {i}: gpu {} cpu {} (|diff| {} > atol {atol} + {RTOL}*|cpu|)", got[i], want[i], (got[i] - want[i]).abs());
    }
}

// ---- set-up



impl Rng {
    fn uniform(&mut self) -> f32 {
        self.unit()
    }
    /// Uniform in [-scale, scale), rounded to bf16.
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| bf16((self.uniform() * 2.0 - 1.0) * scale)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn up(g: &CudaBackend, v: &[f32]) -> atomrl::backend::cuda::CudaTensor {
    g.from_f32(v).unwrap()
}

fn down(g: &CudaBackend, t: &atomrl::backend::cuda::CudaTensor) -> Vec<f32> {
    g.synchronize().unwrap();
    g.to_f32(t).unwrap()
}

// ---- the ops

#[test]
fn param_struct_layouts_match() {
    // The same sizes are asserted at compile time on both sides (build.rs emits the asserts);
    // this lists them so a mismatch names the struct.
    use atomrl::backend::cuda::module::PARAM_SIZES;
    assert!(PARAM_SIZES.iter().any(|(n, _)| *n == "AttentionCausalParams"));
    for (name, size) in PARAM_SIZES {
        assert!(*size > 0 && size % 4 == 0, "{name}: size {size}");
    }
}

#[test]
fn kernels_embedded_when_required() {
    // scripts/test.sh sets ATOMRL_REQUIRE_KERNELS=1 once nvcc is installed; then the build must
    // have embedded them (build.rs fails otherwise, this checks the runtime sees them).
    if std::env::var("ATOMRL_REQUIRE_KERNELS").is_ok_and(|v| v == "1") {
        let has = atomrl::backend::cuda::module::HAS_KERNELS;
        assert!(has, "{}", atomrl::backend::cuda::module::KERNELS_STATUS);
        assert!(!atomrl::backend::cuda::module::Kernel::ALL.is_empty());
    }
}

#[test]
fn embedding() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(1);
    for (rows, dim, vocab) in [(1, 8, 5), (7, 33, 19), (64, 1000, 300)] {
        let table = rng.vec(vocab * dim, 1.0);
        let ids: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        let mut want = vec![0.0; rows * dim];
        Cpu.embedding(&mut want, &table, &ids, rows, dim).unwrap();
        let mut out = g.zeros(rows * dim).unwrap();
        g.embedding(&mut out, &up(g, &table), &g.index(&ids).unwrap(), rows, dim).unwrap();
        check("embedding", &format!("rows={rows} dim={dim}"), &down(g, &out), &want);
    }
}

#[test]
fn rms_norm_and_qk_norm() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(2);
    for (rows, dim) in [(1, 7), (5, 64), (33, 4097), (3, 896)] {
        let x = rng.vec(rows * dim, 3.0);
        let w = rng.vec(dim, 1.5);
        let mut want = vec![0.0; rows * dim];
        Cpu.rms_norm(&mut want, &x, &w, rows, dim, 1e-6).unwrap();
        let mut out = g.zeros(rows * dim).unwrap();
        g.rms_norm(&mut out, &up(g, &x), &up(g, &w), rows, dim, 1e-6).unwrap();
        check("rms_norm", &format!("rows={rows} dim={dim}"), &down(g, &out), &want);
    }
    // per-head norm: rows = tokens * heads, dim = head_dim
    for (tokens, heads, hd) in [(3, 4, 32), (17, 14, 64), (2, 8, 128)] {
        let x = rng.vec(tokens * heads * hd, 2.0);
        let w = rng.vec(hd, 1.0);
        let mut want = vec![0.0; x.len()];
        Cpu.rms_norm(&mut want, &x, &w, tokens * heads, hd, 1e-6).unwrap();
        let mut out = g.zeros(x.len()).unwrap();
        g.qk_norm(&mut out, &up(g, &x), &up(g, &w), tokens, heads, hd, 1e-6).unwrap();
        check("qk_norm", &format!("tokens={tokens} heads={heads} hd={hd}"), &down(g, &out), &want);
    }
}

#[test]
fn add_rms_norm() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(3);
    for (rows, dim) in [(1, 9), (6, 128), (13, 2049)] {
        let res = rng.vec(rows * dim, 2.0);
        let x = rng.vec(rows * dim, 2.0);
        let w = rng.vec(dim, 1.0);
        // reference: the two ops it fuses, with the residual rounded to bf16 as the kernel stores it
        let mut sum = res.clone();
        Cpu.add(&mut sum, &x).unwrap();
        let sum: Vec<f32> = sum.into_iter().map(bf16).collect();
        let mut want = vec![0.0; rows * dim];
        Cpu.rms_norm(&mut want, &sum, &w, rows, dim, 1e-5).unwrap();
        let mut out = g.zeros(rows * dim).unwrap();
        let mut r = up(g, &res);
        g.add_rms_norm(&mut out, &mut r, &up(g, &x), &up(g, &w), rows, dim, 1e-5).unwrap();
        check("add_rms_norm", "out", &down(g, &out), &want);
        check("add_rms_norm", "residual", &down(g, &r), &sum);
    }
}

#[test]
fn elementwise_ops() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(4);
    for n in [1usize, 31, 1000, 70001] {
        let a = rng.vec(n, 4.0);
        let b = rng.vec(n, 4.0);
        let mut want = vec![0.0; n];
        Cpu.swiglu(&mut want, &a, &b).unwrap();
        let mut out = g.zeros(n).unwrap();
        g.swiglu(&mut out, &up(g, &a), &up(g, &b)).unwrap();
        check("swiglu", &format!("n={n}"), &down(g, &out), &want);

        let mut want = a.clone();
        Cpu.add(&mut want, &b).unwrap();
        let mut acc = up(g, &a);
        g.add(&mut acc, &up(g, &b)).unwrap();
        check("add", &format!("n={n}"), &down(g, &acc), &want);
    }
    for (rows, dim) in [(1, 3), (7, 129), (40, 896)] {
        let x = rng.vec(rows * dim, 2.0);
        let bias = rng.vec(dim, 2.0);
        let mut want = x.clone();
        Cpu.add_bias(&mut want, &bias, rows, dim).unwrap();
        let mut t = up(g, &x);
        g.add_bias(&mut t, &up(g, &bias), rows, dim).unwrap();
        check("add_bias", &format!("rows={rows} dim={dim}"), &down(g, &t), &want);
    }
}

#[test]
fn casts_and_copy() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..1001).map(|_| (rng.uniform() - 0.5) * 1000.0).collect();
    let f = g.from_f32_as(&x, DType::F32).unwrap();
    let mut b = g.zeros(x.len()).unwrap();
    g.cast(&mut b, &f).unwrap();
    let want: Vec<f32> = x.iter().map(|&v| bf16(v)).collect();
    check("cast", "f32->bf16", &down(g, &b), &want);
    let mut back = g.zeros_f32(x.len()).unwrap();
    g.cast(&mut back, &b).unwrap();
    check("cast", "bf16->f32", &down(g, &back), &want);

    let mut dst = g.zeros(50).unwrap();
    g.copy(&mut dst, 7, &b, 100, 20).unwrap();
    let mut want_dst = vec![0.0; 50];
    want_dst[7..27].copy_from_slice(&want[100..120]);
    check("copy", "range", &down(g, &dst), &want_dst);

    let mut want_within = want_dst.clone();
    Cpu.copy_within(&mut want_within, 7, 30, 15).unwrap();
    g.copy_within(&mut dst, 7, 30, 15).unwrap();
    check("copy", "within", &down(g, &dst), &want_within);
}

#[test]
fn fill() {
    let g = gpu_or_skip!();
    for n in [1usize, 31, 70001] {
        for dtype in [DType::F32, DType::Bf16] {
            let mut t = g.from_f32_as(&vec![3.0; n], dtype).unwrap();
            g.fill(&mut t, -0.3).unwrap();
            let want = if dtype == DType::Bf16 { bf16(-0.3) } else { -0.3 };
            check("fill", &format!("n={n} {dtype:?}"), &down(g, &t), &vec![want; n]);
        }
    }
}

#[test]
fn gemm() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(6);
    for (m, n, k) in [(1, 1, 1), (2, 3, 0), (3, 5, 7), (17, 33, 65), (128, 256, 64), (5, 151, 896)] {
        for (trans_a, trans_b) in [(false, true), (false, false), (true, false), (true, true)] {
            for accumulate in [false, true] {
                let gm = Gemm { m, n, k, trans_a, trans_b, accumulate };
                let a = rng.vec(m * k, 1.0);
                let b = rng.vec(k * n, 1.0);
                let c0 = rng.vec(m * n, 1.0);
                let mut want = c0.clone();
                Cpu.gemm(&mut want, &a, &b, gm).unwrap();
                let what = format!("{gm:?}");
                // bf16 output
                let mut out = up(g, &c0);
                g.gemm(&mut out, &up(g, &a), &up(g, &b), gm).unwrap();
                check("gemm", &what, &down(g, &out), &want);
                // f32 output (logits, gradients)
                let mut out = g.from_f32_as(&c0, DType::F32).unwrap();
                g.gemm(&mut out, &up(g, &a), &up(g, &b), gm).unwrap();
                check("gemm", &format!("{what} f32 out"), &down(g, &out), &want);
            }
        }
    }
}

#[test]
fn rope() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(7);
    for (rows, n_heads, head_dim, theta, max_pos) in [(1, 1, 2, 10000.0, 1), (5, 3, 16, 10000.0, 100), (7, 2, 128, 1_000_000.0, 40000), (33, 4, 64, 500000.0, 8192)] {
        let x = rng.vec(rows * n_heads * head_dim, 2.0);
        let pos: Vec<u32> = (0..rows).map(|_| rng.below(max_pos) as u32).collect();
        let r = Rope { rows, n_heads, head_dim, theta };
        let mut want = x.clone();
        Cpu.rope(&mut want, &pos, r).unwrap();
        let mut t = up(g, &x);
        g.rope(&mut t, &g.index(&pos).unwrap(), r).unwrap();
        check("rope", &format!("{r:?}"), &down(g, &t), &want);
    }
}

#[test]
fn kv_cache_write() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(8);
    let (slots_total, rows, kv_dim) = (64, 11, 48);
    let k = rng.vec(rows * kv_dim, 1.0);
    let v = rng.vec(rows * kv_dim, 1.0);
    let mut perm: Vec<u32> = (0..slots_total as u32).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    let slots = &perm[..rows];
    let (mut kc, mut vc) = (vec![0.0; slots_total * kv_dim], vec![0.0; slots_total * kv_dim]);
    Cpu.kv_cache_write(&mut kc, &mut vc, &k, &v, &slots.to_vec(), rows, kv_dim).unwrap();
    let (mut gk, mut gv) = (g.zeros(slots_total * kv_dim).unwrap(), g.zeros(slots_total * kv_dim).unwrap());
    g.kv_cache_write(&mut gk, &mut gv, &up(g, &k), &up(g, &v), &g.index(slots).unwrap(), rows, kv_dim).unwrap();
    check("kv_cache_write", "k", &down(g, &gk), &kc);
    check("kv_cache_write", "v", &down(g, &gv), &vc);
}

fn shapes() -> Vec<AttnShape> {
    let mut v = Vec::new();
    for (h, kvh, d) in [(4, 2, 16), (4, 4, 32), (8, 1, 64), (6, 2, 128), (2, 2, 128), (16, 2, 64)] {
        v.push(AttnShape { n_heads: h, n_kv_heads: kvh, head_dim: d, scale: 1.0 / (d as f32).sqrt() });
    }
    v
}

#[test]
fn attention_causal() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(9);
    for s in shapes() {
        for lens in [vec![1usize], vec![17, 5, 64, 130], vec![200], vec![3, 1, 65, 64, 63]] {
            let tokens: usize = lens.iter().sum();
            let mut cu = vec![0u32];
            for l in &lens {
                cu.push(cu.last().unwrap() + *l as u32);
            }
            let q = rng.vec(tokens * s.q_dim(), 2.0);
            let k = rng.vec(tokens * s.kv_dim(), 2.0);
            let v = rng.vec(tokens * s.kv_dim(), 1.0);
            let (mut want, mut want_lse) = (vec![0.0; tokens * s.q_dim()], vec![0.0; tokens * s.n_heads]);
            let cpu_cu = cu.clone();
            Cpu.attention_causal(&mut want, &mut want_lse, &q, &k, &v, &CausalAttn { tokens, n_seqs: lens.len(), shape: s, cu_seqlens: &cpu_cu }).unwrap();
            let gcu = g.index(&cu).unwrap();
            let mut out = g.zeros(tokens * s.q_dim()).unwrap();
            let mut lse = g.zeros_f32(tokens * s.n_heads).unwrap();
            g.attention_causal(&mut out, &mut lse, &up(g, &q), &up(g, &k), &up(g, &v), &CausalAttn { tokens, n_seqs: lens.len(), shape: s, cu_seqlens: &gcu }).unwrap();
            let what = format!("{s:?} lens={lens:?}");
            check("attention_causal", &what, &down(g, &out), &want);
            check("attention_lse", &what, &down(g, &lse), &want_lse);
        }
    }
}

#[test]
fn attention_paged() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(10);
    for s in shapes() {
        for (block_size, ctx_lens, new_tokens) in [(16usize, vec![1usize, 40, 700], 1usize), (4, vec![9, 2000], 3), (32, vec![300; 5], 1)] {
            let n_seqs = ctx_lens.len();
            let max_ctx = *ctx_lens.iter().max().unwrap();
            let max_blocks = max_ctx.div_ceil(block_size);
            let n_blocks = n_seqs * max_blocks;
            // physical blocks in a random order
            let mut perm: Vec<u32> = (0..n_blocks as u32).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            let tables = perm.clone();
            let kc = rng.vec(n_blocks * block_size * s.kv_dim(), 2.0);
            let vc = rng.vec(n_blocks * block_size * s.kv_dim(), 1.0);
            // the last `new_tokens` positions of each sequence are the queries
            let (mut positions, mut token_seq) = (Vec::new(), Vec::new());
            for (seq, &len) in ctx_lens.iter().enumerate() {
                for j in len.saturating_sub(new_tokens)..len {
                    positions.push(j as u32);
                    token_seq.push(seq as u32);
                }
            }
            let tokens = positions.len();
            let q = rng.vec(tokens * s.q_dim(), 2.0);
            let mut want = vec![0.0; tokens * s.q_dim()];
            let cp = PagedAttn::<Cpu> { tokens, shape: s, block_size, max_blocks, positions: &positions, token_seq: &token_seq, block_tables: &tables };
            Cpu.attention_paged(&mut want, &q, &kc, &vc, &cp).unwrap();
            let (gp, gs, gt) = (g.index(&positions).unwrap(), g.index(&token_seq).unwrap(), g.index(&tables).unwrap());
            let gpp = PagedAttn::<CudaBackend> { tokens, shape: s, block_size, max_blocks, positions: &gp, token_seq: &gs, block_tables: &gt };
            let mut out = g.zeros(tokens * s.q_dim()).unwrap();
            g.attention_paged(&mut out, &up(g, &q), &up(g, &kc), &up(g, &vc), &gpp).unwrap();
            check("attention_paged", &format!("{s:?} block_size={block_size} ctx={ctx_lens:?}"), &down(g, &out), &want);
        }
    }
}

#[test]
fn philox_known_answers() {
    let g = gpu_or_skip!();
    let got = g.philox(&[[0; 4], [u32::MAX; 4], [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]], &[[0; 2], [u32::MAX; 2], [0xa4093822, 0x299f31d0]]).unwrap();
    assert_eq!(got[0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(got[1], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(got[2], atomrl::backend::philox::philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]));
}

#[test]
fn sample_matches_cpu_draw_for_draw() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(11);
    let settings = [
        (0.0, 0, 1.0, 0.0),
        (1.0, 0, 1.0, 0.0),
        (0.7, 50, 1.0, 0.0),
        (1.0, 0, 0.9, 0.0),
        (0.6, 20, 0.8, 0.05),
        (1.3, 0, 1.0, 0.1),
        (1.0, 1, 1.0, 0.0),
        (0.9, 1000, 0.95, 0.0),
    ];
    for (vocab, rows_per_setting) in [(7usize, 4usize), (1000, 16), (151936, 6)] {
        let mut params = Vec::new();
        for (i, &(temperature, top_k, top_p, min_p)) in settings.iter().enumerate() {
            for r in 0..rows_per_setting {
                params.push(SampleParams { temperature, top_k, top_p, min_p, seed: 0x5eed_0000_0000_0001 + i as u64, stream: r as u32, step: rng.below(1000) as u32 });
            }
        }
        let rows = params.len();
        // logits stored as f32 (as the lm_head gemm writes them); a few exact ties
        let mut logits: Vec<f32> = (0..rows * vocab).map(|_| (rng.uniform() - 0.5) * 12.0).collect();
        for r in 0..rows {
            logits[r * vocab + vocab / 2] = logits[r * vocab];
        }
        let want = Cpu.sample(&logits, vocab, &params).unwrap();
        let t = g.from_f32_as(&logits, DType::F32).unwrap();
        let got = g.sample(&t, vocab, &params).unwrap();
        for (r, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.token, b.token, "vocab={vocab} row {r} {:?}: gpu drew {}, cpu {}", params[r], a.token, b.token);
            check("sample_logprob", &format!("vocab={vocab} row {r}"), &[a.logprob], &[b.logprob]);
        }
    }
}

// ---- backward ops and the optimizer
//
// These ops take f32 or bf16 tensors. With f32 outputs the comparison is at f32 precision: a
// value passes when `|gpu - cpu| <= rtol·|cpu| + rtol·max|cpu|` (the second term covers elements
// that cancel to near zero), with rtol = ELEMENTWISE_RTOL for elementwise ops and REDUCE_RTOL for
// sums over rows or elements (atomic adds and tree sums run in another order than the CPU's).

/// Relative tolerance of f32 elementwise outputs.
const ELEMENTWISE_RTOL: f32 = 1e-5;
/// Relative tolerance of f32 reductions (sums over rows or elements, atomics).
const REDUCE_RTOL: f32 = 1e-4;

fn check_f32(op: &str, what: &str, got: &[f32], want: &[f32], rtol: f32) {
    check_f32_at_scale(op, what, got, want, rtol, 0.0);
}

/// As [`check_f32`], with the absolute part at least `rtol · min_scale`: for outputs that are
/// sums of terms of about `min_scale` that may cancel to nothing.
fn check_f32_at_scale(op: &str, what: &str, got: &[f32], want: &[f32], rtol: f32, min_scale: f32) {
    assert_eq!(got.len(), want.len(), "{op} {what}: lengths differ");
    let scale = want.iter().fold(min_scale, |m, v| m.max(v.abs()));
    let atol = rtol * scale;
    let mut worst: Option<(usize, f32)> = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        let excess = if excess.is_nan() { f32::INFINITY } else { excess };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("{op} {what}: element {i}: gpu {} cpu {} (|diff| {} > {rtol}*|cpu| + {atol})", got[i], want[i], (got[i] - want[i]).abs());
    }
}

fn up32(g: &CudaBackend, v: &[f32]) -> atomrl::backend::cuda::CudaTensor {
    g.from_f32_as(v, DType::F32).unwrap()
}

#[test]
fn embedding_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(12);
    // small vocabularies so ids repeat (several rows add into one table row)
    for (rows, dim, vocab) in [(1, 8, 5), (7, 33, 3), (300, 1000, 17), (1000, 65, 1000)] {
        let d_out = rng.vec(rows * dim, 1.0);
        let table0 = rng.vec(vocab * dim, 1.0);
        let ids: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        let mut want = table0.clone();
        Cpu.embedding_backward(&mut want, &d_out, &ids, rows, dim).unwrap();
        let gi = g.index(&ids).unwrap();
        let what = format!("rows={rows} dim={dim} vocab={vocab}");
        // f32 gradient from f32 and from bf16 upstream gradients
        for bf16_in in [false, true] {
            let mut t = up32(g, &table0);
            let d = if bf16_in { up(g, &d_out) } else { up32(g, &d_out) };
            g.embedding_backward(&mut t, &d, &gi, rows, dim).unwrap();
            check_f32("embedding_backward", &format!("{what} bf16 d_out={bf16_in}"), &down(g, &t), &want, REDUCE_RTOL);
        }
    }
}

#[test]
fn rms_norm_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(13);
    // rows around the 32-row block, dims that are not multiples of 32
    for (rows, dim) in [(1, 7), (5, 64), (33, 97), (70, 1000), (3, 4097), (129, 33)] {
        let x = rng.vec(rows * dim, 3.0);
        let w = rng.vec(dim, 1.5);
        let dy = rng.vec(rows * dim, 1.0);
        let dx0 = rng.vec(rows * dim, 1.0);
        let dw0 = rng.vec(dim, 1.0);
        let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
        Cpu.rms_norm_backward(&mut dx, &mut dw, &dy, &x, &w, rows, dim, 1e-6).unwrap();
        let what = format!("rows={rows} dim={dim}");
        // all f32, then bf16 inputs with f32 gradients (activations and weights as the CUDA
        // model stores them)
        for bf16_in in [false, true] {
            let put = |v: &[f32]| if bf16_in { up(g, v) } else { up32(g, v) };
            let (mut gdx, mut gdw) = (up32(g, &dx0), up32(g, &dw0));
            g.rms_norm_backward(&mut gdx, &mut gdw, &put(&dy), &put(&x), &put(&w), rows, dim, 1e-6).unwrap();
            // dx: two row sums (mean(x²), mean(g·x)) per row
            check_f32("rms_norm_backward", &format!("{what} dx bf16 in={bf16_in}"), &down(g, &gdx), &dx, REDUCE_RTOL);
            check_f32("rms_norm_backward", &format!("{what} d_weight bf16 in={bf16_in}"), &down(g, &gdw), &dw, REDUCE_RTOL);
        }
    }
}

#[test]
fn add_bias_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(14);
    for (rows, dim) in [(1, 3), (7, 129), (65, 896), (300, 33)] {
        let dx = rng.vec(rows * dim, 2.0);
        let db0 = rng.vec(dim, 1.0);
        let mut want = db0.clone();
        Cpu.add_bias_backward(&mut want, &dx, rows, dim).unwrap();
        let mut db = up32(g, &db0);
        g.add_bias_backward(&mut db, &up32(g, &dx), rows, dim).unwrap();
        check_f32("add_bias_backward", &format!("rows={rows} dim={dim}"), &down(g, &db), &want, REDUCE_RTOL);
    }
}

#[test]
fn rope_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(15);
    // Positions below 64: the kernel forms inv_freq as rope.cu does (pow in double), the CPU in
    // f32, and they may differ by an ulp; times the position that stays inside the tolerance.
    for (rows, n_heads, head_dim, theta) in [(1, 1, 2, 10000.0), (5, 3, 16, 10000.0), (7, 2, 128, 1_000_000.0), (33, 4, 64, 500000.0)] {
        let r = Rope { rows, n_heads, head_dim, theta };
        let dx = rng.vec(rows * n_heads * head_dim, 2.0);
        let pos: Vec<u32> = (0..rows).map(|_| rng.below(64) as u32).collect();
        let mut want = dx.clone();
        Cpu.rope_backward(&mut want, &pos, r).unwrap();
        let gp = g.index(&pos).unwrap();
        let mut t = up32(g, &dx);
        g.rope_backward(&mut t, &gp, r).unwrap();
        check_f32("rope_backward", &format!("{r:?}"), &down(g, &t), &want, ELEMENTWISE_RTOL);
    }
    // The inverse of the GPU's own rope at long positions (bf16, as rope stores it).
    for (rows, n_heads, head_dim, theta, max_pos) in [(7, 2, 128, 1_000_000.0, 40000), (33, 4, 64, 500000.0, 8192)] {
        let r = Rope { rows, n_heads, head_dim, theta };
        let x = rng.vec(rows * n_heads * head_dim, 2.0);
        let pos: Vec<u32> = (0..rows).map(|_| rng.below(max_pos) as u32).collect();
        let gp = g.index(&pos).unwrap();
        let mut t = up(g, &x);
        g.rope(&mut t, &gp, r).unwrap();
        g.rope_backward(&mut t, &gp, r).unwrap();
        check("rope_roundtrip", &format!("rope_backward(rope(x)) {r:?}"), &down(g, &t), &x);
    }
}

#[test]
fn swiglu_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(16);
    for n in [1usize, 31, 1000, 70001] {
        let dy = rng.vec(n, 2.0);
        let gate = rng.vec(n, 4.0);
        let upv = rng.vec(n, 4.0);
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        Cpu.swiglu_backward(&mut dg, &mut du, &dy, &gate, &upv).unwrap();
        for bf16_in in [false, true] {
            let put = |v: &[f32]| if bf16_in { up(g, v) } else { up32(g, v) };
            let (mut gdg, mut gdu) = (g.zeros_f32(n).unwrap(), g.zeros_f32(n).unwrap());
            g.swiglu_backward(&mut gdg, &mut gdu, &put(&dy), &put(&gate), &put(&upv)).unwrap();
            check_f32("swiglu_backward", &format!("n={n} d_gate bf16 in={bf16_in}"), &down(g, &gdg), &dg, ELEMENTWISE_RTOL);
            check_f32("swiglu_backward", &format!("n={n} d_up bf16 in={bf16_in}"), &down(g, &gdu), &du, ELEMENTWISE_RTOL);
        }
        // bf16 outputs: one rounding of each
        let (mut gdg, mut gdu) = (g.zeros(n).unwrap(), g.zeros(n).unwrap());
        g.swiglu_backward(&mut gdg, &mut gdu, &up(g, &dy), &up(g, &gate), &up(g, &upv)).unwrap();
        check("swiglu", &format!("swiglu_backward n={n} d_gate bf16"), &down(g, &gdg), &dg);
        check("swiglu", &format!("swiglu_backward n={n} d_up bf16"), &down(g, &gdu), &du);
    }
}

#[test]
fn sum_squares() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(17);
    // up to more elements than the 1024 blocks × 256 threads of one grid pass
    for n in [1usize, 31, 1000, 70001, (1 << 20) + 3] {
        let x = rng.vec(n, 3.0);
        let mut want = vec![0.5f32];
        Cpu.sum_squares(&mut want, &x).unwrap();
        for bf16_in in [false, true] {
            let mut acc = up32(g, &[0.5]);
            let xt = if bf16_in { up(g, &x) } else { up32(g, &x) };
            g.sum_squares(&mut acc, &xt).unwrap();
            check_f32("sum_squares", &format!("n={n} bf16 x={bf16_in}"), &down(g, &acc), &want, REDUCE_RTOL);
        }
    }
}

#[test]
fn adamw() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(18);
    for n in [1usize, 31, 1000, 70001] {
        let param: Vec<f32> = rng.vec(n, 1.0);
        let m0 = rng.vec(n, 0.01);
        let v0: Vec<f32> = rng.vec(n, 1e-4).into_iter().map(f32::abs).collect();
        let (mut w, mut m, mut v) = (param.clone(), m0.clone(), v0.clone());
        let (mut gw, mut gm, mut gv) = (up32(g, &param), up32(g, &m0), up32(g, &v0));
        // two consecutive steps with different gradients and hyper-parameters
        for (step, lr, wd, grad_scale) in [(1u64, 1e-3f32, 0.1f32, 1.0f32), (7, 3e-4, 0.0, 0.37)] {
            let grad = rng.vec(n, 0.05);
            let hp = AdamW { lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd, step, grad_scale };
            Cpu.adamw(&mut w, &grad, &mut m, &mut v, hp).unwrap();
            g.adamw(&mut gw, &up32(g, &grad), &mut gm, &mut gv, hp).unwrap();
            let what = format!("n={n} step={step}");
            check_f32("adamw", &format!("{what} param"), &down(g, &gw), &w, ELEMENTWISE_RTOL);
            check_f32("adamw", &format!("{what} m"), &down(g, &gm), &m, ELEMENTWISE_RTOL);
            check_f32("adamw", &format!("{what} v"), &down(g, &gv), &v, ELEMENTWISE_RTOL);
        }
    }
}

#[test]
fn attention_causal_backward() {
    let g = gpu_or_skip!();
    let mut rng = Rng::new(19);
    for s in shapes() {
        for lens in [vec![1usize], vec![17, 5, 64, 130], vec![3, 1, 65, 64, 63]] {
            let tokens: usize = lens.iter().sum();
            let mut cu = vec![0u32];
            for l in &lens {
                cu.push(cu.last().unwrap() + *l as u32);
            }
            let q = rng.vec(tokens * s.q_dim(), 2.0);
            let k = rng.vec(tokens * s.kv_dim(), 2.0);
            let v = rng.vec(tokens * s.kv_dim(), 1.0);
            let d_out = rng.vec(tokens * s.q_dim(), 1.0);
            // the CPU's forward outputs feed both backward passes, so only the backward is compared
            let cp = CausalAttn::<Cpu> { tokens, n_seqs: lens.len(), shape: s, cu_seqlens: &cu };
            let (mut out, mut lse) = (vec![0.0; tokens * s.q_dim()], vec![0.0; tokens * s.n_heads]);
            Cpu.attention_causal(&mut out, &mut lse, &q, &k, &v, &cp).unwrap();
            let (mut dq, mut dk, mut dv) = (vec![0.0; tokens * s.q_dim()], vec![0.0; tokens * s.kv_dim()], vec![0.0; tokens * s.kv_dim()]);
            Cpu.attention_causal_backward(&mut dq, &mut dk, &mut dv, &d_out, &q, &k, &v, &out, &lse, &cp).unwrap();
            let gcu = g.index(&cu).unwrap();
            let gp = CausalAttn::<CudaBackend> { tokens, n_seqs: lens.len(), shape: s, cu_seqlens: &gcu };
            // f32 everywhere, then q, k, v, d_out in bf16 (as the forward stores them)
            for bf16_in in [false, true] {
                let put = |x: &[f32]| if bf16_in { up(g, x) } else { up32(g, x) };
                let (mut gdq, mut gdk, mut gdv) = (g.zeros_f32(dq.len()).unwrap(), g.zeros_f32(dk.len()).unwrap(), g.zeros_f32(dv.len()).unwrap());
                g.attention_causal_backward(&mut gdq, &mut gdk, &mut gdv, &put(&d_out), &put(&q), &put(&k), &put(&v), &up32(g, &out), &up32(g, &lse), &gp).unwrap();
                let what = format!("{s:?} lens={lens:?} bf16 in={bf16_in}");
                // dS = P·(dO·v - D) cancels exactly for a query that sees one key (lens [1]), so
                // dq and dk are measured against the size of its terms: scale·|k or q|·|dO·v|,
                // with |dO·v| about sqrt(head_dim)·max|dO|·max|v| for random signs.
                let dov = (s.head_dim as f32).sqrt() * max_abs(&d_out) * max_abs(&v);
                // bf16 inputs take the tensor-core kernels, which round P and dS to bf16 for the
                // products (as the forward rounds P): a quarter of a bf16 spacing of the largest value
                // (the CPU emulator measured under half of that on these shapes).
                let rtol = if bf16_in { BF16_ULP / 4.0 } else { REDUCE_RTOL };
                check_f32_at_scale("attention_causal_backward", &format!("{what} dq"), &down(g, &gdq), &dq, rtol, s.scale * max_abs(&k) * dov);
                check_f32_at_scale("attention_causal_backward", &format!("{what} dk"), &down(g, &gdk), &dk, rtol, s.scale * max_abs(&q) * dov);
                check_f32("attention_causal_backward", &format!("{what} dv"), &down(g, &gdv), &dv, rtol);
            }
        }
    }
}

// ---- the fixture models on the GPU against transformers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn fixture_logits(name: &str) {
    use atomrl::model::checkpoint::read_all;
    use atomrl::model::{KvCache, Model};
    let g = gpu_or_skip!();
    let dir = fixture(name);
    let expected = read_all(&dir.join("expected.safetensors")).unwrap();
    let (ids_shape, ids) = &expected["input_ids"];
    let (batch, seq) = (ids_shape[0], ids_shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let (_, want) = &expected["logits"];
    let model = Model::load(g, &dir).unwrap();

    let cu: Vec<u32> = (0..=batch).map(|b| (b * seq) as u32).collect();
    let fwd = model.forward_train(g, &ids, &cu, false).unwrap();
    let rows: Vec<usize> = (0..batch * seq).collect();
    let got = model.logits(g, &fwd.x_final, &rows).unwrap();
    check("fixture_logits", &format!("{name} training forward"), &down(g, &got), want);

    let mut cache = KvCache::new(g, &model.config, batch * (seq + 4), 4).unwrap();
    let entries: Vec<(u64, &[u32])> = (0..batch).map(|b| (b as u64, &ids[b * seq..(b + 1) * seq])).collect();
    let got = model.forward_cached(g, &mut cache, &entries, true).unwrap();
    check("fixture_logits", &format!("{name} cached forward"), &down(g, &got), want);
}

#[test]
fn fixture_tiny_llama_logits() {
    fixture_logits("tiny-llama");
}

#[test]
fn fixture_tiny_qwen2_logits() {
    fixture_logits("tiny-qwen2");
}

#[test]
fn fixture_tiny_qwen3_logits() {
    fixture_logits("tiny-qwen3");
}
