//! The `Backend` op set on the GPU: each op checks its buffers, fills its kernel's params struct
//! and launches the kernel of the same name (`kernels/<family>.cu`).

use anyhow::{bail, ensure, Result};

use super::memory::{CudaIndex, CudaTensor, DType};
use super::module::{self, elementwise, grid, *};
use super::{want_bf16, want_len, CudaBackend};
use crate::backend::{AdamW, Backend, CausalAttn, CrossEntropy, Gemm, LossGrads, PagedAttn, PolicyLoss, Rope, SampleParams, Sampled};

/// Query rows per block of the prefill attention kernel (attention.cu: ATTN_BM).
const ATTN_BM: usize = 64;
/// Rows per block of the norm kernels (norm.cu: NORM_ROWS_PER_BLOCK).
const NORM_ROWS_PER_BLOCK: usize = 4;
/// Threads of the sampling kernel (sampling.cu: SAMPLE_THREADS).
const SAMPLE_THREADS: u32 = 1024;
/// Context positions per split of the paged attention, at least.
const PAGED_MIN_SPLIT: usize = 256;

impl CudaBackend {
    pub(super) fn launch<P: KernelParams + cudarc::driver::DeviceRepr>(&self, k: Kernel, cfg: cudarc::driver::LaunchConfig, p: &P) -> Result<()> {
        let (x, y, z) = cfg.grid_dim;
        if x == 0 || y == 0 || z == 0 {
            return Ok(()); // nothing to do (zero rows), and CUDA rejects an empty grid
        }
        self.dev.bind()?;
        self.module.launch(&self.dev.stream, k, cfg, p)
    }

    /// residual += x; out = rms_norm(residual) * weight (the pre-norm of the next sub-layer).
    #[allow(clippy::too_many_arguments)] // the trait's rms_norm arguments plus the residual
    pub fn add_rms_norm(&self, out: &mut CudaTensor, residual: &mut CudaTensor, x: &CudaTensor, weight: &CudaTensor, rows: usize, dim: usize, eps: f32) -> Result<()> {
        for (t, n, what) in [(&*out, rows * dim, "add_rms_norm out"), (&*residual, rows * dim, "add_rms_norm residual"), (x, rows * dim, "add_rms_norm x"), (weight, dim, "add_rms_norm weight")] {
            want_len(t, n, what)?;
            want_bf16(t, what)?;
        }
        let p = AddRmsNormParams { out: out.ptr(), residual: residual.ptr(), x: x.ptr(), weight: weight.ptr(), rows: rows as i32, dim: dim as i32, eps };
        self.launch(Kernel::AddRmsNorm, grid((rows.div_ceil(NORM_ROWS_PER_BLOCK) as u32, 1, 1), 32 * NORM_ROWS_PER_BLOCK as u32), &p)
    }

    /// Per-head RMSNorm of q or k (`x` is `[rows, n_heads*head_dim]`, `weight` `[head_dim]`).
    #[allow(clippy::too_many_arguments)] // the trait's rms_norm arguments, heads split out
    pub fn qk_norm(&self, out: &mut CudaTensor, x: &CudaTensor, weight: &CudaTensor, rows: usize, n_heads: usize, head_dim: usize, eps: f32) -> Result<()> {
        self.rms_norm(out, x, weight, rows * n_heads, head_dim, eps)
    }

    /// Philox4x32-10 of `(counter, key)` pairs on the device (a check of the generator the
    /// sampler uses against published test vectors).
    pub fn philox(&self, counters: &[[u32; 4]], keys: &[[u32; 2]]) -> Result<Vec<[u32; 4]>> {
        ensure!(counters.len() == keys.len(), "philox: {} counters, {} keys", counters.len(), keys.len());
        let n = counters.len();
        self.dev.bind()?;
        let c = self.pool.alloc(n * 16)?;
        let k = self.pool.alloc(n * 8)?;
        let o = self.pool.alloc(n * 16)?;
        self.upload(c.ptr(), counters)?;
        self.upload(k.ptr(), keys)?;
        let p = PhiloxParams { out: o.ptr(), counter: c.ptr(), key: k.ptr(), n: n as i32 };
        self.launch(Kernel::Philox, elementwise(n), &p)?;
        let flat: Vec<u32> = self.download(o.ptr(), n * 4)?;
        Ok(flat.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
    }
}

/// The paged attention kernel for `head_dim` holding `heads_per_block` (1, 2, 4 or 8) query heads.
fn paged_kernel(head_dim: usize, heads_per_block: usize) -> Result<Kernel> {
    Ok(match (head_dim, heads_per_block) {
        (16, 1) => Kernel::AttentionPagedHd16G1,
        (16, 2) => Kernel::AttentionPagedHd16G2,
        (16, 4) => Kernel::AttentionPagedHd16G4,
        (16, 8) => Kernel::AttentionPagedHd16G8,
        (32, 1) => Kernel::AttentionPagedHd32G1,
        (32, 2) => Kernel::AttentionPagedHd32G2,
        (32, 4) => Kernel::AttentionPagedHd32G4,
        (32, 8) => Kernel::AttentionPagedHd32G8,
        (64, 1) => Kernel::AttentionPagedHd64G1,
        (64, 2) => Kernel::AttentionPagedHd64G2,
        (64, 4) => Kernel::AttentionPagedHd64G4,
        (64, 8) => Kernel::AttentionPagedHd64G8,
        (128, 1) => Kernel::AttentionPagedHd128G1,
        (128, 2) => Kernel::AttentionPagedHd128G2,
        (128, 4) => Kernel::AttentionPagedHd128G4,
        (128, 8) => Kernel::AttentionPagedHd128G8,
        (d, _) => bail!("attention_paged: head_dim {d} has no kernel (16, 32, 64, 128)"),
    })
}

fn causal_kernel(head_dim: usize) -> Result<Kernel> {
    Ok(match head_dim {
        16 => Kernel::AttentionCausalHd16,
        32 => Kernel::AttentionCausalHd32,
        64 => Kernel::AttentionCausalHd64,
        128 => Kernel::AttentionCausalHd128,
        d => bail!("attention_causal: head_dim {d} has no kernel (16, 32, 64, 128)"),
    })
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Index = CudaIndex;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> Result<CudaTensor> {
        self.alloc_zeroed(len, DType::Bf16)
    }

    fn from_f32(&self, data: &[f32]) -> Result<CudaTensor> {
        self.from_f32_as(data, DType::Bf16)
    }

    fn zeros_f32(&self, len: usize) -> Result<CudaTensor> {
        self.alloc_zeroed(len, DType::F32)
    }

    fn from_f32_exact(&self, data: &[f32]) -> Result<CudaTensor> {
        self.from_f32_as(data, DType::F32)
    }

    fn needs_master_weights(&self) -> bool {
        true
    }

    /// `out = in` converted between f32 and bf16 (the output at least as long).
    fn cast(&self, out: &mut CudaTensor, input: &CudaTensor) -> Result<()> {
        ensure!(out.len >= input.len, "cast: output has {} elements, input {}", out.len, input.len);
        let p = CastParams { out: out.ptr(), src: input.ptr(), n: input.len as i64 };
        match (input.dtype, out.dtype) {
            (DType::F32, DType::Bf16) => self.launch(Kernel::CastF32ToBf16, elementwise(input.len), &p),
            (DType::Bf16, DType::F32) => self.launch(Kernel::CastBf16ToF32, elementwise(input.len), &p),
            _ => self.copy(out, 0, input, 0, input.len),
        }
    }

    fn to_f32(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.dev.bind()?;
        match t.dtype {
            DType::F32 => self.download(t.ptr(), t.len),
            DType::Bf16 => Ok(self.download::<half::bf16>(t.ptr(), t.len)?.into_iter().map(f32::from).collect()),
        }
    }

    fn index(&self, data: &[u32]) -> Result<CudaIndex> {
        self.dev.bind()?;
        let buf = self.pool.alloc(data.len() * 4)?;
        self.upload(buf.ptr(), data)?;
        Ok(CudaIndex { buf, len: data.len() })
    }

    fn len(&self, t: &CudaTensor) -> usize {
        t.len
    }

    fn copy(&self, dst: &mut CudaTensor, dst_off: usize, src: &CudaTensor, src_off: usize, len: usize) -> Result<()> {
        ensure!(dst.dtype == src.dtype, "copy: {:?} into {:?} (use cast)", src.dtype, dst.dtype);
        ensure!(dst_off + len <= dst.len && src_off + len <= src.len, "copy: range out of bounds");
        self.dev.bind()?;
        let s = dst.dtype.size();
        // SAFETY: both ranges are in bounds (checked above).
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr() + (dst_off * s) as u64, src.ptr() + (src_off * s) as u64, len * s, self.dev.stream.cu_stream()) }?;
        Ok(())
    }

    fn fill(&self, x: &mut CudaTensor, value: f32) -> Result<()> {
        self.fill_impl(x, value)
    }

    fn copy_within(&self, t: &mut CudaTensor, src_off: usize, dst_off: usize, len: usize) -> Result<()> {
        ensure!(src_off.max(dst_off) + len <= t.len, "copy_within out of bounds");
        ensure!(src_off + len <= dst_off || dst_off + len <= src_off, "copy_within ranges overlap");
        self.dev.bind()?;
        let s = t.dtype.size();
        // SAFETY: both ranges are in bounds and disjoint (checked above).
        unsafe { cudarc::driver::result::memcpy_dtod_async(t.ptr() + (dst_off * s) as u64, t.ptr() + (src_off * s) as u64, len * s, self.dev.stream.cu_stream()) }?;
        Ok(())
    }

    fn embedding(&self, out: &mut CudaTensor, table: &CudaTensor, ids: &CudaIndex, rows: usize, dim: usize) -> Result<()> {
        want_len(out, rows * dim, "embedding out")?;
        ensure!(ids.len >= rows, "embedding: {} ids for {rows} rows", ids.len);
        let p = EmbeddingParams { out: want_bf16(out, "embedding out")?, table: want_bf16(table, "embedding table")?, ids: ids.ptr(), rows: rows as i32, dim: dim as i32, vocab: (table.len / dim.max(1)) as i32 };
        self.launch(Kernel::Embedding, grid((rows as u32, 1, 1), 256), &p)
    }

    fn rms_norm(&self, out: &mut CudaTensor, x: &CudaTensor, weight: &CudaTensor, rows: usize, dim: usize, eps: f32) -> Result<()> {
        want_len(out, rows * dim, "rms_norm out")?;
        want_len(x, rows * dim, "rms_norm x")?;
        want_len(weight, dim, "rms_norm weight")?;
        let p = RmsNormParams { out: want_bf16(out, "rms_norm out")?, x: want_bf16(x, "rms_norm x")?, weight: want_bf16(weight, "rms_norm weight")?, rows: rows as i32, dim: dim as i32, eps };
        self.launch(Kernel::RmsNorm, grid((rows.div_ceil(NORM_ROWS_PER_BLOCK) as u32, 1, 1), 32 * NORM_ROWS_PER_BLOCK as u32), &p)
    }

    fn gemm(&self, out: &mut CudaTensor, a: &CudaTensor, b: &CudaTensor, g: Gemm) -> Result<()> {
        want_len(out, g.m * g.n, "gemm out")?;
        want_len(a, g.m * g.k, "gemm a")?;
        want_len(b, g.k * g.n, "gemm b")?;
        let (a_ptr, b_ptr) = (want_bf16(a, "gemm a")?, want_bf16(b, "gemm b")?);
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        if g.k == 0 {
            // an empty sum: out = 0, or unchanged when accumulating
            if !g.accumulate {
                self.dev.bind()?;
                // SAFETY: out holds at least m*n elements (checked above).
                unsafe { cudarc::driver::result::memset_d8_async(out.ptr(), 0, g.m * g.n * out.dtype.size(), self.dev.stream.cu_stream()) }?;
            }
            return Ok(());
        }
        let blas = self.blas.as_ref().ok_or_else(|| anyhow::anyhow!("gemm: {}", super::cublaslt_available().err().unwrap_or_default()))?;
        self.dev.bind()?;
        blas.gemm(self.dev.stream.cu_stream() as _, out.ptr(), out.dtype, a_ptr, b_ptr, g)
    }

    fn add_bias(&self, x: &mut CudaTensor, bias: &CudaTensor, rows: usize, dim: usize) -> Result<()> {
        want_len(x, rows * dim, "add_bias x")?;
        want_len(bias, dim, "add_bias bias")?;
        let p = AddParams { acc: want_bf16(x, "add_bias x")?, x: want_bf16(bias, "add_bias bias")?, n: (rows * dim) as i64, dim: dim as i32 };
        self.launch(Kernel::Add, elementwise(rows * dim), &p)
    }

    fn add(&self, acc: &mut CudaTensor, x: &CudaTensor) -> Result<()> {
        ensure!(acc.len == x.len, "add: lengths {} and {}", acc.len, x.len);
        let p = AddParams { acc: want_bf16(acc, "add acc")?, x: want_bf16(x, "add x")?, n: x.len as i64, dim: 0 };
        self.launch(Kernel::Add, elementwise(x.len), &p)
    }

    fn rope(&self, x: &mut CudaTensor, positions: &CudaIndex, r: Rope) -> Result<()> {
        want_len(x, r.rows * r.n_heads * r.head_dim, "rope x")?;
        ensure!(positions.len >= r.rows, "rope: {} positions for {} rows", positions.len, r.rows);
        ensure!(r.head_dim % 2 == 0, "rope: odd head_dim {}", r.head_dim);
        let p = RopeParams { x: want_bf16(x, "rope x")?, positions: positions.ptr(), rows: r.rows as i32, n_heads: r.n_heads as i32, head_dim: r.head_dim as i32, theta: r.theta };
        self.launch(Kernel::Rope, grid((r.rows as u32, 1, 1), 128), &p)
    }

    fn swiglu(&self, out: &mut CudaTensor, gate: &CudaTensor, up: &CudaTensor) -> Result<()> {
        ensure!(gate.len == up.len && out.len >= gate.len, "swiglu: lengths out {} gate {} up {}", out.len, gate.len, up.len);
        let p = SwigluParams { out: want_bf16(out, "swiglu out")?, gate: want_bf16(gate, "swiglu gate")?, up: want_bf16(up, "swiglu up")?, n: gate.len as i64 };
        self.launch(Kernel::Swiglu, elementwise(gate.len), &p)
    }

    fn kv_cache_write(&self, k_cache: &mut CudaTensor, v_cache: &mut CudaTensor, k: &CudaTensor, v: &CudaTensor, slots: &CudaIndex, rows: usize, kv_dim: usize) -> Result<()> {
        want_len(k, rows * kv_dim, "kv_cache_write k")?;
        want_len(v, rows * kv_dim, "kv_cache_write v")?;
        ensure!(slots.len >= rows, "kv_cache_write: {} slots for {rows} rows", slots.len);
        let p = KvCacheWriteParams {
            k_cache: want_bf16(k_cache, "k_cache")?,
            v_cache: want_bf16(v_cache, "v_cache")?,
            k: want_bf16(k, "kv_cache_write k")?,
            v: want_bf16(v, "kv_cache_write v")?,
            slots: slots.ptr(),
            rows: rows as i32,
            kv_dim: kv_dim as i32,
        };
        self.launch(Kernel::KvCacheWrite, grid((rows as u32, 1, 1), 256), &p)
    }

    fn attention_paged(&self, out: &mut CudaTensor, q: &CudaTensor, k_cache: &CudaTensor, v_cache: &CudaTensor, p: &PagedAttn<Self>) -> Result<()> {
        let s = p.shape;
        // Query heads per block: the smallest of 1, 2, 4, 8 that holds the group (registers grow
        // with it); larger groups are split over several blocks.
        let heads_per_block = s.group().min(8).next_power_of_two();
        let kernel = paged_kernel(s.head_dim, heads_per_block)?;
        ensure!(s.n_heads % s.n_kv_heads == 0, "attention_paged: {} heads over {} kv heads", s.n_heads, s.n_kv_heads);
        want_len(q, p.tokens * s.q_dim(), "attention_paged q")?;
        want_len(out, p.tokens * s.q_dim(), "attention_paged out")?;
        if p.tokens == 0 {
            return Ok(());
        }
        // Enough splits to fill the GPU twice over, each at least PAGED_MIN_SPLIT positions.
        let max_ctx = p.max_blocks * p.block_size;
        let head_chunks = s.group().div_ceil(heads_per_block);
        let blocks = p.tokens * s.n_kv_heads * head_chunks;
        let want = (2 * self.dev.sm_count as usize).div_ceil(blocks);
        let n_splits = want.clamp(1, max_ctx.div_ceil(PAGED_MIN_SPLIT).max(1));
        let split_len = max_ctx.div_ceil(n_splits);
        let n_splits = max_ctx.div_ceil(split_len);
        let scratch = if n_splits > 1 { Some((self.pool.alloc(p.tokens * s.n_heads * n_splits * s.head_dim * 4)?, self.pool.alloc(p.tokens * s.n_heads * n_splits * 4)?)) } else { None };
        let params = AttentionPagedParams {
            out: want_bf16(out, "attention_paged out")?,
            part_out: scratch.as_ref().map_or(0, |s| s.0.ptr()),
            part_lse: scratch.as_ref().map_or(0, |s| s.1.ptr()),
            q: want_bf16(q, "attention_paged q")?,
            k_cache: want_bf16(k_cache, "k_cache")?,
            v_cache: want_bf16(v_cache, "v_cache")?,
            positions: p.positions.ptr(),
            token_seq: p.token_seq.ptr(),
            block_tables: p.block_tables.ptr(),
            tokens: p.tokens as i32,
            n_heads: s.n_heads as i32,
            n_kv_heads: s.n_kv_heads as i32,
            block_size: p.block_size as i32,
            max_blocks: p.max_blocks as i32,
            n_splits: n_splits as i32,
            split_len: split_len as i32,
            scale: s.scale,
        };
        self.launch(kernel, grid((p.tokens as u32, (s.n_kv_heads * head_chunks) as u32, n_splits as u32), 128), &params)?;
        if n_splits > 1 {
            self.launch(Kernel::AttentionPagedMerge, grid((p.tokens as u32, s.n_heads as u32, 1), s.head_dim as u32), &params)?;
        }
        Ok(())
    }

    fn attention_causal(&self, out: &mut CudaTensor, lse: &mut CudaTensor, q: &CudaTensor, k: &CudaTensor, v: &CudaTensor, p: &CausalAttn<Self>) -> Result<()> {
        let s = p.shape;
        let kernel = causal_kernel(s.head_dim)?;
        ensure!(s.n_heads % s.n_kv_heads == 0, "attention_causal: {} heads over {} kv heads", s.n_heads, s.n_kv_heads);
        want_len(q, p.tokens * s.q_dim(), "attention_causal q")?;
        want_len(k, p.tokens * s.kv_dim(), "attention_causal k")?;
        want_len(v, p.tokens * s.kv_dim(), "attention_causal v")?;
        want_len(out, p.tokens * s.q_dim(), "attention_causal out")?;
        want_len(lse, p.tokens * s.n_heads, "attention_causal lse")?;
        ensure!(p.cu_seqlens.len > p.n_seqs, "attention_causal: cu_seqlens has {} entries for {} sequences", p.cu_seqlens.len, p.n_seqs);
        if p.tokens == 0 || p.n_seqs == 0 {
            return Ok(());
        }
        let (lse_f32, lse_bf16) = match lse.dtype {
            DType::F32 => (lse.ptr(), 0),
            DType::Bf16 => (0, lse.ptr()),
        };
        let params = AttentionCausalParams {
            out: want_bf16(out, "attention_causal out")?,
            lse: lse_f32,
            lse_bf16,
            q: want_bf16(q, "attention_causal q")?,
            k: want_bf16(k, "attention_causal k")?,
            v: want_bf16(v, "attention_causal v")?,
            cu_seqlens: p.cu_seqlens.ptr(),
            tokens: p.tokens as i32,
            n_seqs: p.n_seqs as i32,
            n_heads: s.n_heads as i32,
            n_kv_heads: s.n_kv_heads as i32,
            scale: s.scale,
        };
        // Every sequence's query tiles fit in tokens/BM + n_seqs blocks; blocks past the last
        // tile exit at once.
        let tiles = p.tokens.div_ceil(ATTN_BM) + p.n_seqs;
        self.launch(kernel, grid((tiles as u32, s.n_heads as u32, 1), 128), &params)
    }

    // ---- the losses (loss.rs)

    fn policy_loss(&self, logp: &mut CudaTensor, stats: &mut CudaTensor, grads: Option<LossGrads<Self>>, p: &PolicyLoss<Self>) -> Result<()> {
        self.policy_loss_impl(logp, stats, grads, p)
    }

    fn cross_entropy(&self, logp: &mut CudaTensor, stats: &mut CudaTensor, grads: Option<LossGrads<Self>>, p: &CrossEntropy<Self>) -> Result<()> {
        self.cross_entropy_impl(logp, stats, grads, p)
    }

    // ---- backward ops and the optimizer (backward.rs): f32 or bf16 tensors

    fn embedding_backward(&self, d_table: &mut CudaTensor, d_out: &CudaTensor, ids: &CudaIndex, rows: usize, dim: usize) -> Result<()> {
        self.embedding_backward_impl(d_table, d_out, ids, rows, dim)
    }

    fn rms_norm_backward(&self, dx: &mut CudaTensor, d_weight: &mut CudaTensor, d_out: &CudaTensor, x: &CudaTensor, weight: &CudaTensor, rows: usize, dim: usize, eps: f32) -> Result<()> {
        self.rms_norm_backward_impl(dx, d_weight, d_out, x, weight, rows, dim, eps)
    }

    fn add_bias_backward(&self, d_bias: &mut CudaTensor, dx: &CudaTensor, rows: usize, dim: usize) -> Result<()> {
        self.add_bias_backward_impl(d_bias, dx, rows, dim)
    }

    fn rope_backward(&self, dx: &mut CudaTensor, positions: &CudaIndex, r: Rope) -> Result<()> {
        self.rope_backward_impl(dx, positions, r)
    }

    fn swiglu_backward(&self, d_gate: &mut CudaTensor, d_up: &mut CudaTensor, d_out: &CudaTensor, gate: &CudaTensor, up: &CudaTensor) -> Result<()> {
        self.swiglu_backward_impl(d_gate, d_up, d_out, gate, up)
    }

    fn attention_causal_backward(&self, dq: &mut CudaTensor, dk: &mut CudaTensor, dv: &mut CudaTensor, d_out: &CudaTensor, q: &CudaTensor, k: &CudaTensor, v: &CudaTensor, out: &CudaTensor, lse: &CudaTensor, p: &CausalAttn<Self>) -> Result<()> {
        self.attention_causal_backward_impl(dq, dk, dv, d_out, q, k, v, out, lse, p)
    }

    fn sum_squares(&self, acc: &mut CudaTensor, x: &CudaTensor) -> Result<()> {
        self.sum_squares_impl(acc, x)
    }

    fn adamw(&self, param: &mut CudaTensor, grad: &CudaTensor, m: &mut CudaTensor, v: &mut CudaTensor, p: AdamW) -> Result<()> {
        self.adamw_impl(param, grad, m, v, p)
    }

    fn sample(&self, logits: &CudaTensor, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>> {
        let rows = params.len();
        want_len(logits, rows * vocab, "sample logits")?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let cfg: Vec<SampleRow> = params
            .iter()
            .map(|sp| SampleRow { temperature: sp.temperature, top_k: sp.top_k.min(i32::MAX as u32) as i32, top_p: sp.top_p, min_p: sp.min_p, seed: sp.seed, stream: sp.stream, step: sp.step })
            .collect();
        self.dev.bind()?;
        let cfg_buf = self.pool.alloc(std::mem::size_of_val(cfg.as_slice()))?;
        self.upload(cfg_buf.ptr(), &cfg)?;
        let toks = self.pool.alloc(rows * 4)?;
        let lps = self.pool.alloc(rows * 4)?;
        let (f32_ptr, bf16_ptr) = match logits.dtype {
            DType::F32 => (logits.ptr(), 0),
            DType::Bf16 => (0, logits.ptr()),
        };
        let p = module::SampleParams { tokens: toks.ptr(), logprobs: lps.ptr(), logits: f32_ptr, logits_bf16: bf16_ptr, rows_cfg: cfg_buf.ptr(), rows: rows as i32, vocab: vocab as i32 };
        self.launch(Kernel::Sample, grid((rows as u32, 1, 1), SAMPLE_THREADS), &p)?;
        let tokens: Vec<u32> = self.download(toks.ptr(), rows)?;
        let logprobs: Vec<f32> = self.download(lps.ptr(), rows)?;
        Ok(tokens.into_iter().zip(logprobs).map(|(token, logprob)| Sampled { token, logprob }).collect())
    }
}
