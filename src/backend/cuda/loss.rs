//! The token-level losses on the GPU (`kernels/loss.cu`; `cpu/loss.rs` is the reference, and
//! the steps are the same): the clipped policy-gradient objective and cross-entropy over one
//! chunked log-softmax of the output head.
//!
//! The active rows (weight ≠ 0) are found on the host, from one read-back of the weights and
//! targets (which also checks every active target against the vocabulary, as the CPU does).
//! Then, per chunk of active rows: `loss_copy_rows` gathers their hidden states, cuBLAS forms
//! the f32 logits `[chunk, vocab]`, the `policy_loss` / `cross_entropy` kernel (a block per
//! row) writes the log-probs, adds the statistics into f32 scratch and writes `dL/dlogits` in
//! bf16, and two more products give the chunk's `d_hidden` rows (scattered back by
//! `loss_copy_rows`) and accumulate `d_head`. `loss_stats` writes the statistics at the end.
//!
//! `hidden` and `head` must be bf16 (cuBLAS operands); the per-row inputs and every output may
//! be f32 or bf16. Scratch: `chunk × vocab` f32 logits, and as many bf16 `dL/dlogits` with grads.

use anyhow::{ensure, Result};

use super::memory::{CudaIndex, CudaTensor, DType};
use super::module::{grid, *};
use super::{want_bf16, CudaBackend};
use crate::backend::{Backend, CrossEntropy, Gemm, KlEstimator, LossGrads, LossRows, LossStat, PolicyLoss, PolicyLossParams, LOSS_STATS};

/// Threads per row of the loss kernels (loss.cu: LOSS_THREADS).
const LOSS_THREADS: u32 = 512;
/// Threads per row of `loss_copy_rows`.
const COPY_THREADS: u32 = 256;

// loss.cu keeps the statistics in LossStat's order and encodes the ratio extremes.
const _: () = assert!(LOSS_STATS == 13 && LossStat::RatioMin as usize == 8 && LossStat::RatioMax as usize == 9);

/// A float as an int whose signed order is the float's (loss.cu: ordered_int).
fn ordered_int(x: f32) -> u32 {
    let bits = x.to_bits() as i32;
    (if bits >= 0 { bits } else { bits ^ 0x7fff_ffff }) as u32
}

/// The `bf16_mask` bit of an optional tensor: set when it is present and bf16.
fn bf16_bit(t: Option<&CudaTensor>, bit: u32) -> u32 {
    u32::from(t.is_some_and(|t| t.dtype == DType::Bf16)) << bit
}

fn ptr_or_null(t: Option<&CudaTensor>) -> u64 {
    t.map_or(0, |t| t.ptr())
}

/// The policy objective's per-row inputs and options; `None` in [`CudaBackend::chunked_loss`]
/// is cross-entropy.
struct PolicyInputs<'a> {
    advantages: &'a CudaTensor,
    old_logp: Option<&'a CudaTensor>,
    ref_logp: Option<&'a CudaTensor>,
    rollout_logp: Option<&'a CudaTensor>,
    params: PolicyLossParams,
}

/// The scratch of one call, sized for `chunk` rows.
struct Scratch {
    logits: CudaTensor,
    h: CudaTensor,
    /// `dL/dlogits` (bf16) and the chunk's `d_hidden` rows (f32), with grads only.
    d_logits: Option<CudaTensor>,
    dh: Option<CudaTensor>,
    stats: CudaTensor,
}

impl CudaBackend {
    pub(super) fn policy_loss_impl(&self, logp: &mut CudaTensor, stats: &mut CudaTensor, grads: Option<LossGrads<Self>>, p: &PolicyLoss<Self>) -> Result<()> {
        let rows = p.rows.rows;
        for (name, t) in [("advantages", Some(p.advantages)), ("old_logp", p.old_logp), ("ref_logp", p.ref_logp), ("rollout_logp", p.rollout_logp)] {
            if let Some(t) = t {
                ensure!(t.len >= rows, "policy_loss: {name} has {} rows, expected {rows}", t.len);
            }
        }
        let inputs = PolicyInputs { advantages: p.advantages, old_logp: p.old_logp, ref_logp: p.ref_logp, rollout_logp: p.rollout_logp, params: p.params };
        self.chunked_loss(&p.rows, p.params.temperature, logp, stats, grads, Some(&inputs))
    }

    pub(super) fn cross_entropy_impl(&self, logp: &mut CudaTensor, stats: &mut CudaTensor, grads: Option<LossGrads<Self>>, p: &CrossEntropy<Self>) -> Result<()> {
        self.chunked_loss(&p.rows, p.temperature, logp, stats, grads, None)
    }

    /// Checks the buffers and finds the active rows: their indices, in order.
    fn active_rows(&self, p: &LossRows<Self>, temperature: f32, logp: &CudaTensor, stats: &CudaTensor, grads: Option<&LossGrads<Self>>) -> Result<Vec<u32>> {
        let (rows, dim, vocab) = (p.rows, p.dim, p.vocab);
        ensure!(p.chunk > 0, "loss chunk must be positive");
        ensure!(temperature > 0.0, "temperature must be positive, got {temperature}");
        ensure!(p.hidden.len >= rows * dim && p.head.len >= vocab * dim, "loss: hidden or head smaller than [{rows}, {dim}] / [{vocab}, {dim}]");
        want_bf16(p.hidden, "loss hidden")?;
        want_bf16(p.head, "loss head")?;
        ensure!(p.targets.len >= rows && p.weights.len >= rows && logp.len >= rows, "loss: fewer than {rows} targets, weights or log-prob slots");
        ensure!(stats.len >= LOSS_STATS, "loss: stats needs {LOSS_STATS} slots");
        ensure!(vocab <= i32::MAX as usize && rows <= u32::MAX as usize, "loss: vocabulary {vocab} or {rows} rows too large");
        if let Some(g) = grads {
            ensure!(g.d_hidden.len >= rows * dim && g.d_head.len >= vocab * dim, "loss: gradient buffers smaller than [{rows}, {dim}] / [{vocab}, {dim}]");
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let weights = self.to_f32(p.weights)?;
        let targets: Vec<u32> = self.download(p.targets.ptr(), rows)?;
        let active: Vec<u32> = (0..rows as u32).filter(|&r| weights[r as usize] != 0.0).collect();
        for &r in &active {
            let t = targets[r as usize];
            ensure!((t as usize) < vocab, "target token {t} of row {r} is outside the vocabulary ({vocab})");
        }
        Ok(active)
    }

    fn loss_scratch(&self, chunk: usize, dim: usize, vocab: usize, with_grads: bool) -> Result<Scratch> {
        // f32 zeros, with the ratio extremes at +inf and -inf in their ordered-int form
        let mut init = [0u32; LOSS_STATS];
        init[LossStat::RatioMin as usize] = ordered_int(f32::INFINITY);
        init[LossStat::RatioMax as usize] = ordered_int(f32::NEG_INFINITY);
        let stats = self.alloc(LOSS_STATS, DType::F32)?;
        self.upload(stats.ptr(), &init)?;
        Ok(Scratch {
            logits: self.alloc(chunk * vocab, DType::F32)?,
            h: self.alloc(chunk * dim, DType::Bf16)?,
            d_logits: if with_grads { Some(self.alloc(chunk * vocab, DType::Bf16)?) } else { None },
            dh: if with_grads { Some(self.alloc(chunk * dim, DType::F32)?) } else { None },
            stats,
        })
    }

    /// `dst[dst_rows[i]] = src[src_rows[i]]` for `n` rows of `dim` (a null index: identity).
    fn loss_copy_rows(&self, dst: &mut CudaTensor, src: &CudaTensor, dst_rows: u64, src_rows: u64, n: usize, dim: usize) -> Result<()> {
        let mask = u32::from(dst.dtype == DType::Bf16) | u32::from(src.dtype == DType::Bf16) << 1;
        let p = LossCopyRowsParams { dst: dst.ptr(), src: src.ptr(), dst_rows, src_rows, n: n as i32, dim: dim as i32, bf16_mask: mask };
        self.launch(Kernel::LossCopyRows, grid((n as u32, 1, 1), COPY_THREADS), &p)
    }

    /// The shared body of both losses (see the module header).
    fn chunked_loss(&self, p: &LossRows<Self>, temperature: f32, logp: &mut CudaTensor, stats: &mut CudaTensor, grads: Option<LossGrads<Self>>, policy: Option<&PolicyInputs>) -> Result<()> {
        let (rows, dim, vocab) = (p.rows, p.dim, p.vocab);
        let active = self.active_rows(p, temperature, logp, stats, grads.as_ref())?;
        self.dev.bind()?;
        let stream = self.dev.stream.cu_stream();
        if rows > 0 {
            // SAFETY: the lengths were checked by active_rows.
            unsafe { cudarc::driver::result::memset_d8_async(logp.ptr(), 0, rows * logp.dtype.size(), stream) }?;
            if let Some(g) = grads.as_ref() {
                unsafe { cudarc::driver::result::memset_d8_async(g.d_hidden.ptr(), 0, rows * dim * g.d_hidden.dtype.size(), stream) }?;
            }
        }
        let chunk = p.chunk.min(active.len().max(1));
        let mut s = self.loss_scratch(chunk, dim, vocab, grads.is_some())?;
        let mut grads = grads;
        if !active.is_empty() {
            let idx = self.index(&active)?;
            let mut params = self.chunk_params(p, temperature, logp, &s, policy);
            for start in (0..active.len()).step_by(chunk) {
                let c = chunk.min(active.len() - start);
                self.loss_chunk(p, &idx, start, c, &mut s, &mut params, grads.as_mut(), policy.is_some())?;
            }
        }
        let (set_ratio, ratio_value) = match (policy, active.is_empty()) {
            (None, _) => (1, 1.0),
            (Some(_), true) => (1, 0.0),
            (Some(_), false) => (0, 0.0),
        };
        let sp = LossStatsParams { out: stats.ptr(), stats: s.stats.ptr(), ratio_value, set_ratio, bf16_mask: u32::from(stats.dtype == DType::Bf16) };
        self.launch(Kernel::LossStats, grid((1, 1, 1), 32), &sp)
    }

    /// The params of the row kernel, less the chunk's rows and count.
    fn chunk_params(&self, p: &LossRows<Self>, temperature: f32, logp: &CudaTensor, s: &Scratch, policy: Option<&PolicyInputs>) -> LossChunkParams {
        let mut c = LossChunkParams {
            logp: logp.ptr(),
            weights: p.weights.ptr(),
            logits: s.logits.ptr(),
            d_logits: ptr_or_null(s.d_logits.as_ref()),
            stats: s.stats.ptr(),
            targets: p.targets.ptr(),
            vocab: p.vocab as i32,
            inv_t: 1.0 / temperature,
            bf16_mask: bf16_bit(Some(logp), 0) | bf16_bit(Some(p.weights), 1),
            ..Default::default()
        };
        if let Some(q) = policy {
            let hp = q.params;
            c.advantages = q.advantages.ptr();
            c.old_logp = ptr_or_null(q.old_logp);
            c.ref_logp = ptr_or_null(q.ref_logp);
            c.rollout_logp = ptr_or_null(q.rollout_logp);
            c.bf16_mask |= bf16_bit(Some(q.advantages), 2) | bf16_bit(q.old_logp, 3) | bf16_bit(q.ref_logp, 4) | bf16_bit(q.rollout_logp, 5);
            c.clip_low = hp.clip_low;
            c.clip_high = hp.clip_high;
            c.dual_clip = hp.dual_clip.unwrap_or(0.0);
            c.kl_coef = hp.kl_coef;
            c.tis_cap = hp.tis_cap.unwrap_or(0.0);
            c.kl_estimator = match hp.kl_estimator {
                KlEstimator::K1 => 1,
                KlEstimator::K2 => 2,
                KlEstimator::K3 => 3,
            };
            c.flags = u32::from(hp.dual_clip.is_some()) | u32::from(hp.tis_cap.is_some()) << 1;
        }
        c
    }

    /// Active rows `start..start + c` (indices in `idx`): logits, the row kernel, gradients.
    #[allow(clippy::too_many_arguments)]
    fn loss_chunk(&self, p: &LossRows<Self>, idx: &CudaIndex, start: usize, c: usize, s: &mut Scratch, params: &mut LossChunkParams, grads: Option<&mut LossGrads<Self>>, policy: bool) -> Result<()> {
        let (dim, vocab) = (p.dim, p.vocab);
        let rows_ptr = idx.ptr() + (start * 4) as u64;
        self.loss_copy_rows(&mut s.h, p.hidden, 0, rows_ptr, c, dim)?;
        self.gemm(&mut s.logits, &s.h, p.head, Gemm::linear(c, vocab, dim))?;
        params.rows = rows_ptr;
        params.n = c as i32;
        let kernel = if policy { Kernel::PolicyLoss } else { Kernel::CrossEntropy };
        self.launch(kernel, grid((c as u32, 1, 1), LOSS_THREADS), params)?;
        let (Some(g), Some(d_logits), Some(dh)) = (grads, s.d_logits.as_ref(), s.dh.as_mut()) else { return Ok(()) };
        self.gemm(dh, d_logits, p.head, Gemm { m: c, n: dim, k: vocab, trans_a: false, trans_b: false, accumulate: false })?;
        self.loss_copy_rows(g.d_hidden, dh, rows_ptr, 0, c, dim)?;
        self.gemm(g.d_head, d_logits, &s.h, Gemm { m: vocab, n: dim, k: c, trans_a: true, trans_b: false, accumulate: true })
    }
}
