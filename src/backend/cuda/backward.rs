//! The backward ops and the optimizer on the GPU (`kernels/backward.cu`,
//! `kernels/attention_backward.cu` and `_tc.cu`, `kernels/optimizer.cu`);
//! the `Backend` methods in `ops.rs` call these. Their tensors may be f32 or bf16 (each kernel
//! reads the type of every pointer from a `bf16_mask`), so gradients and optimizer state can be
//! kept in f32 while activations stay bf16.

use anyhow::{ensure, Result};

use super::memory::{CudaIndex, CudaTensor, DType};
use super::module::{elementwise, grid, *};
use super::{want_len, CudaBackend};
use crate::backend::{AdamW, CausalAttn, Rope};

/// Rows per block of `rms_norm_backward` and its threads (backward.cu: RMS_BWD_ROWS, _THREADS).
const RMS_BWD_ROWS: usize = 32;
const RMS_BWD_THREADS: u32 = 256;
/// Rows per block of `add_bias_backward` (backward.cu: BIAS_BWD_ROWS).
const BIAS_BWD_ROWS: usize = 64;
/// Warps per block of the attention backward kernels (attention_backward.cu: ATTN_BWD_WARPS),
/// and the largest head_dim they hold in registers (32 × ATTN_BWD_E).
const ATTN_BWD_WARPS: usize = 4;
const ATTN_BWD_MAX_HEAD_DIM: usize = 128;
/// Rows per tile and threads per block of the tensor-core backward (tensor_core.cuh: ATTN_BM,
/// ATTN_THREADS).
const ATTN_TILE_ROWS: usize = 64;
const ATTN_TC_THREADS: u32 = 128;
/// Blocks of `sum_squares` at most: each adds one partial into the accumulator.
const SUM_SQUARES_MAX_BLOCKS: usize = 1024;

/// The `bf16_mask` of a params struct: bit i set when the i-th tensor is bf16.
fn bf16_mask(tensors: &[&CudaTensor]) -> u32 {
    tensors.iter().enumerate().fold(0, |m, (i, t)| m | (u32::from(t.dtype == DType::Bf16) << i))
}

impl CudaBackend {
    pub(super) fn embedding_backward_impl(&self, d_table: &mut CudaTensor, d_out: &CudaTensor, ids: &CudaIndex, rows: usize, dim: usize) -> Result<()> {
        want_len(d_out, rows * dim, "embedding_backward d_out")?;
        ensure!(ids.len >= rows, "embedding_backward: {} ids for {rows} rows", ids.len);
        ensure!(dim > 0 || rows == 0, "embedding_backward: dim 0");
        // Ids outside the table cannot be reported without a sync: their rows are skipped.
        let vocab = d_table.len / dim.max(1);
        let p = EmbeddingBackwardParams { bf16_mask: bf16_mask(&[d_table, d_out]), d_table: d_table.ptr(), d_out: d_out.ptr(), ids: ids.ptr(), rows: rows as i32, dim: dim as i32, vocab: vocab as i32 };
        self.launch(Kernel::EmbeddingBackward, grid((rows as u32, 1, 1), 256), &p)
    }

    #[allow(clippy::too_many_arguments)] // the trait's arguments
    pub(super) fn rms_norm_backward_impl(&self, dx: &mut CudaTensor, d_weight: &mut CudaTensor, d_out: &CudaTensor, x: &CudaTensor, weight: &CudaTensor, rows: usize, dim: usize, eps: f32) -> Result<()> {
        for (t, n, what) in [(&*dx, rows * dim, "rms_norm_backward dx"), (&*d_weight, dim, "rms_norm_backward d_weight"), (d_out, rows * dim, "rms_norm_backward d_out"), (x, rows * dim, "rms_norm_backward x"), (weight, dim, "rms_norm_backward weight")] {
            want_len(t, n, what)?;
        }
        let p = RmsNormBackwardParams {
            bf16_mask: bf16_mask(&[dx, d_weight, d_out, x, weight]),
            dx: dx.ptr(),
            d_weight: d_weight.ptr(),
            d_out: d_out.ptr(),
            x: x.ptr(),
            weight: weight.ptr(),
            rows: rows as i32,
            dim: dim as i32,
            eps,
        };
        self.launch(Kernel::RmsNormBackward, grid((rows.div_ceil(RMS_BWD_ROWS) as u32, 1, 1), RMS_BWD_THREADS), &p)
    }

    pub(super) fn add_bias_backward_impl(&self, d_bias: &mut CudaTensor, dx: &CudaTensor, rows: usize, dim: usize) -> Result<()> {
        want_len(d_bias, dim, "add_bias_backward d_bias")?;
        want_len(dx, rows * dim, "add_bias_backward dx")?;
        let p = AddBiasBackwardParams { bf16_mask: bf16_mask(&[d_bias, dx]), d_bias: d_bias.ptr(), dx: dx.ptr(), rows: rows as i32, dim: dim as i32 };
        self.launch(Kernel::AddBiasBackward, grid((dim.div_ceil(256) as u32, rows.div_ceil(BIAS_BWD_ROWS) as u32, 1), 256), &p)
    }

    pub(super) fn rope_backward_impl(&self, dx: &mut CudaTensor, positions: &CudaIndex, r: Rope) -> Result<()> {
        want_len(dx, r.rows * r.n_heads * r.head_dim, "rope_backward dx")?;
        ensure!(positions.len >= r.rows, "rope_backward: {} positions for {} rows", positions.len, r.rows);
        ensure!(r.head_dim % 2 == 0, "rope_backward: odd head_dim {}", r.head_dim);
        let p = RopeBackwardParams { bf16_mask: bf16_mask(&[dx]), x: dx.ptr(), positions: positions.ptr(), rows: r.rows as i32, n_heads: r.n_heads as i32, head_dim: r.head_dim as i32, theta: r.theta };
        self.launch(Kernel::RopeBackward, grid((r.rows as u32, 1, 1), 128), &p)
    }

    pub(super) fn swiglu_backward_impl(&self, d_gate: &mut CudaTensor, d_up: &mut CudaTensor, d_out: &CudaTensor, gate: &CudaTensor, up: &CudaTensor) -> Result<()> {
        let n = d_out.len;
        ensure!(d_gate.len == n && d_up.len == n && gate.len == n && up.len == n, "swiglu_backward: lengths d_gate {} d_up {} d_out {n} gate {} up {}", d_gate.len, d_up.len, gate.len, up.len);
        let p = SwigluBackwardParams { bf16_mask: bf16_mask(&[d_gate, d_up, d_out, gate, up]), d_gate: d_gate.ptr(), d_up: d_up.ptr(), d_out: d_out.ptr(), gate: gate.ptr(), up: up.ptr(), n: n as i64 };
        self.launch(Kernel::SwigluBackward, elementwise(n), &p)
    }

    pub(super) fn sum_squares_impl(&self, acc: &mut CudaTensor, x: &CudaTensor) -> Result<()> {
        ensure!(!acc.is_empty(), "sum_squares: empty accumulator");
        let p = SumSquaresParams { bf16_mask: bf16_mask(&[acc, x]), acc: acc.ptr(), x: x.ptr(), n: x.len as i64 };
        let blocks = x.len.div_ceil(256).min(SUM_SQUARES_MAX_BLOCKS);
        self.launch(Kernel::SumSquares, grid((blocks as u32, 1, 1), 256), &p)
    }

    pub(super) fn adamw_impl(&self, param: &mut CudaTensor, grad: &CudaTensor, m: &mut CudaTensor, v: &mut CudaTensor, hp: AdamW) -> Result<()> {
        let n = param.len;
        ensure!(grad.len == n && m.len == n && v.len == n, "adamw: parameter, gradient and moments differ in length");
        ensure!(hp.step >= 1, "adamw: steps count from 1");
        // The step-dependent scalars, computed as cpu/adamw.rs computes them.
        let t = hp.step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (hp.beta1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (hp.beta2 as f64).powi(t)).sqrt() as f32;
        let step_size = (hp.lr as f64 / bc1) as f32;
        let decay = 1.0 - hp.lr * hp.weight_decay;
        let p = AdamwParams {
            bf16_mask: bf16_mask(&[param, grad, m, v]),
            param: param.ptr(),
            grad: grad.ptr(),
            m: m.ptr(),
            v: v.ptr(),
            n: n as i64,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            decay,
            step_size,
            bc2_sqrt,
            grad_scale: hp.grad_scale,
        };
        self.launch(Kernel::Adamw, elementwise(n), &p)
    }

    #[allow(clippy::too_many_arguments)] // the trait's arguments
    pub(super) fn attention_causal_backward_impl(&self, dq: &mut CudaTensor, dk: &mut CudaTensor, dv: &mut CudaTensor, d_out: &CudaTensor, q: &CudaTensor, k: &CudaTensor, v: &CudaTensor, out: &CudaTensor, lse: &CudaTensor, p: &CausalAttn<Self>) -> Result<()> {
        let s = p.shape;
        ensure!(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0, "attention_causal_backward: {} heads over {} kv heads", s.n_heads, s.n_kv_heads);
        ensure!(s.head_dim <= ATTN_BWD_MAX_HEAD_DIM, "attention_causal_backward: head_dim {} is above {ATTN_BWD_MAX_HEAD_DIM}", s.head_dim);
        let (t, qd, kvd) = (p.tokens, s.q_dim(), s.kv_dim());
        for (x, n, what) in [(&*dq, t * qd, "dq"), (&*dk, t * kvd, "dk"), (&*dv, t * kvd, "dv"), (d_out, t * qd, "d_out"), (q, t * qd, "q"), (k, t * kvd, "k"), (v, t * kvd, "v"), (out, t * qd, "out"), (lse, t * s.n_heads, "lse")] {
            want_len(x, n, &format!("attention_causal_backward {what}"))?;
        }
        ensure!(p.cu_seqlens.len > p.n_seqs, "attention_causal_backward: cu_seqlens has {} entries for {} sequences", p.cu_seqlens.len, p.n_seqs);
        if t == 0 || p.n_seqs == 0 {
            return Ok(());
        }
        self.dev.bind()?;
        let delta = self.pool.alloc(t * s.n_heads * 4)?;
        let params = AttentionBackwardParams {
            bf16_mask: bf16_mask(&[dq, dk, dv, d_out, q, k, v, out, lse]),
            dq: dq.ptr(),
            dk: dk.ptr(),
            dv: dv.ptr(),
            d_out: d_out.ptr(),
            q: q.ptr(),
            k: k.ptr(),
            v: v.ptr(),
            out: out.ptr(),
            lse: lse.ptr(),
            delta: delta.ptr(),
            cu_seqlens: p.cu_seqlens.ptr(),
            tokens: t as i32,
            n_seqs: p.n_seqs as i32,
            n_heads: s.n_heads as i32,
            n_kv_heads: s.n_kv_heads as i32,
            head_dim: s.head_dim as i32,
            scale: s.scale,
        };
        let threads = 32 * ATTN_BWD_WARPS as u32;
        self.launch(Kernel::AttentionCausalBackwardDelta, grid(((t * s.n_heads).div_ceil(ATTN_BWD_WARPS) as u32, 1, 1), threads), &params)?;
        let all_bf16 = [d_out, q, k, v].iter().all(|x| x.dtype == DType::Bf16);
        if let (true, Some((dq_kernel, dkv_kernel))) = (all_bf16, tensor_core_backward_kernels(s.head_dim)) {
            // attention_backward_tc.cu: one block per (sequence, 64-row tile) and head, as the forward.
            let tiles = (t.div_ceil(ATTN_TILE_ROWS) + p.n_seqs) as u32;
            self.launch(dq_kernel, grid((tiles, s.n_heads as u32, 1), ATTN_TC_THREADS), &params)?;
            return self.launch(dkv_kernel, grid((tiles, s.n_kv_heads as u32, 1), ATTN_TC_THREADS), &params);
        }
        self.launch(Kernel::AttentionCausalBackwardDq, grid((t.div_ceil(ATTN_BWD_WARPS) as u32, s.n_heads as u32, 1), threads), &params)?;
        self.launch(Kernel::AttentionCausalBackwardDkv, grid((t.div_ceil(ATTN_BWD_WARPS) as u32, s.n_kv_heads as u32, 1), threads), &params)
    }
}

/// The tensor-core backward kernels (dQ; dK and dV) for bf16 inputs of this head_dim, if any.
fn tensor_core_backward_kernels(head_dim: usize) -> Option<(Kernel, Kernel)> {
    Some(match head_dim {
        16 => (Kernel::AttentionCausalBackwardDqHd16, Kernel::AttentionCausalBackwardDkvHd16),
        32 => (Kernel::AttentionCausalBackwardDqHd32, Kernel::AttentionCausalBackwardDkvHd32),
        64 => (Kernel::AttentionCausalBackwardDqHd64, Kernel::AttentionCausalBackwardDkvHd64),
        128 => (Kernel::AttentionCausalBackwardDqHd128, Kernel::AttentionCausalBackwardDkvHd128),
        _ => return None,
    })
}
