//! The CPU reference backend: f32 everywhere, rayon across rows and heads, the `gemm` crate for
//! matrix products. It is the specification every CUDA kernel is tested against, so each op is
//! written the plain way; the functions carry the same names as the kernels in `kernels/`.

mod adamw;
mod attention;
mod attention_backward;
mod backward;
pub mod loss;
mod ops;
mod sampling;
mod skinny;

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::{AdamW, Backend, CausalAttn, CrossEntropy, Gemm, LossGrads, LossStat, PagedAttn, PolicyLoss, Rope, SampleParams, Sampled};

/// Makes the calling thread one of rayon's workers; call it first thing from the thread that
/// drives the model. Every op is a rayon fork-join, and from a thread outside the pool each one
/// would be handed to the pool and waited on, a sleep and a wake-up per op, hundreds per decoded
/// token. Does nothing when the global pool already exists.
pub fn join_thread_pool() {
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
}

/// The CPU backend. Stateless: tensors are plain `Vec<f32>`, indices `Vec<u32>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Tensor = Vec<f32>;
    type Index = Vec<u32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn from_f32(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn to_f32(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(t.clone())
    }
    fn index(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }
    fn len(&self, t: &Vec<f32>) -> usize {
        t.len()
    }
    fn copy(&self, dst: &mut Vec<f32>, dst_off: usize, src: &Vec<f32>, src_off: usize, len: usize) -> Result<()> {
        ensure!(dst_off + len <= dst.len() && src_off + len <= src.len(), "copy out of bounds");
        dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
        Ok(())
    }

    fn fill(&self, x: &mut Vec<f32>, value: f32) -> Result<()> {
        x.par_chunks_mut(1 << 16).for_each(|c| c.fill(value));
        Ok(())
    }

    fn copy_within(&self, t: &mut Vec<f32>, src_off: usize, dst_off: usize, len: usize) -> Result<()> {
        ensure!(src_off.max(dst_off) + len <= t.len(), "copy_within out of bounds");
        ensure!(src_off + len <= dst_off || dst_off + len <= src_off, "copy_within ranges overlap");
        t.copy_within(src_off..src_off + len, dst_off);
        Ok(())
    }

    fn embedding(&self, out: &mut Vec<f32>, table: &Vec<f32>, ids: &Vec<u32>, rows: usize, dim: usize) -> Result<()> {
        ops::embedding(out, table, ids, rows, dim)
    }
    fn embedding_backward(&self, d_table: &mut Vec<f32>, d_out: &Vec<f32>, ids: &Vec<u32>, rows: usize, dim: usize) -> Result<()> {
        backward::embedding_backward(d_table, d_out, ids, rows, dim)
    }
    fn rms_norm(&self, out: &mut Vec<f32>, x: &Vec<f32>, weight: &Vec<f32>, rows: usize, dim: usize, eps: f32) -> Result<()> {
        ops::rms_norm(out, x, weight, rows, dim, eps);
        Ok(())
    }
    fn rms_norm_backward(&self, dx: &mut Vec<f32>, d_weight: &mut Vec<f32>, d_out: &Vec<f32>, x: &Vec<f32>, weight: &Vec<f32>, rows: usize, dim: usize, eps: f32) -> Result<()> {
        ensure!(dx.len() >= rows * dim && d_out.len() >= rows * dim && x.len() >= rows * dim && weight.len() == dim && d_weight.len() == dim, "rms_norm_backward: buffers do not fit [{rows}, {dim}]");
        backward::rms_norm_backward(dx, d_weight, d_out, x, weight, rows, dim, eps);
        Ok(())
    }
    fn gemm(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, g: Gemm) -> Result<()> {
        ops::gemm(out, a, b, g)
    }
    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        ops::add_bias(x, bias, rows, dim);
        Ok(())
    }
    fn add_bias_backward(&self, d_bias: &mut Vec<f32>, dx: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        ensure!(d_bias.len() == dim && dx.len() >= rows * dim, "add_bias_backward: buffers do not fit [{rows}, {dim}]");
        backward::add_bias_backward(d_bias, dx, rows, dim);
        Ok(())
    }
    fn add(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> Result<()> {
        ensure!(acc.len() == x.len(), "add: lengths {} and {} differ", acc.len(), x.len());
        acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
        Ok(())
    }
    fn rope(&self, x: &mut Vec<f32>, positions: &Vec<u32>, r: Rope) -> Result<()> {
        ops::rope(x, positions, r, 1.0);
        Ok(())
    }
    fn rope_backward(&self, dx: &mut Vec<f32>, positions: &Vec<u32>, r: Rope) -> Result<()> {
        ops::rope(dx, positions, r, -1.0);
        Ok(())
    }
    fn swiglu(&self, out: &mut Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>) -> Result<()> {
        ops::swiglu(out, gate, up);
        Ok(())
    }
    fn swiglu_backward(&self, d_gate: &mut Vec<f32>, d_up: &mut Vec<f32>, d_out: &Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>) -> Result<()> {
        let n = d_out.len();
        ensure!(d_gate.len() == n && d_up.len() == n && gate.len() == n && up.len() == n, "swiglu_backward: lengths differ");
        backward::swiglu_backward(d_gate, d_up, d_out, gate, up);
        Ok(())
    }
    fn kv_cache_write(&self, k_cache: &mut Vec<f32>, v_cache: &mut Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, slots: &Vec<u32>, rows: usize, kv_dim: usize) -> Result<()> {
        for r in 0..rows {
            let s = slots[r] as usize * kv_dim;
            ensure!(s + kv_dim <= k_cache.len(), "kv_cache_write: slot {} outside the cache", slots[r]);
            k_cache[s..s + kv_dim].copy_from_slice(&k[r * kv_dim..(r + 1) * kv_dim]);
            v_cache[s..s + kv_dim].copy_from_slice(&v[r * kv_dim..(r + 1) * kv_dim]);
        }
        Ok(())
    }
    fn attention_paged(&self, out: &mut Vec<f32>, q: &Vec<f32>, k_cache: &Vec<f32>, v_cache: &Vec<f32>, p: &PagedAttn<Self>) -> Result<()> {
        attention::attention_paged(out, q, k_cache, v_cache, p);
        Ok(())
    }
    fn attention_causal(&self, out: &mut Vec<f32>, lse: &mut Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, p: &CausalAttn<Self>) -> Result<()> {
        attention::attention_causal(out, lse, q, k, v, p);
        Ok(())
    }
    fn attention_causal_backward(&self, dq: &mut Vec<f32>, dk: &mut Vec<f32>, dv: &mut Vec<f32>, d_out: &Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, out: &Vec<f32>, lse: &Vec<f32>, p: &CausalAttn<Self>) -> Result<()> {
        let s = p.shape;
        ensure!(dq.len() >= p.tokens * s.q_dim() && dk.len() >= p.tokens * s.kv_dim() && dv.len() >= p.tokens * s.kv_dim(), "attention_causal_backward: gradient buffers too small");
        attention_backward::attention_causal_backward(dq, dk, dv, d_out, q, k, v, out, lse, p);
        Ok(())
    }

    fn policy_loss(&self, logp: &mut Vec<f32>, stats: &mut Vec<f32>, grads: Option<LossGrads<Self>>, p: &PolicyLoss<Self>) -> Result<()> {
        let rows = p.rows.rows;
        for (name, t) in [("advantages", Some(p.advantages)), ("old_logp", p.old_logp), ("ref_logp", p.ref_logp), ("rollout_logp", p.rollout_logp)] {
            if let Some(t) = t {
                ensure!(t.len() >= rows, "policy_loss: {name} has {} rows, expected {rows}", t.len());
            }
        }
        let hp = p.params;
        let grads = grads.map(|g| (g.d_hidden, g.d_head));
        loss::chunked_loss(&p.rows, hp.temperature, logp, stats, grads, |r, lp, _, stats| {
            let token = loss::PolicyToken {
                weight: p.rows.weights[r],
                advantage: p.advantages[r],
                old_logp: p.old_logp.map(|x| x[r]),
                ref_logp: p.ref_logp.map(|x| x[r]),
                rollout_logp: p.rollout_logp.map(|x| x[r]),
            };
            loss::policy_token(lp, &token, &hp, stats)
        })
    }
    fn cross_entropy(&self, logp: &mut Vec<f32>, stats: &mut Vec<f32>, grads: Option<LossGrads<Self>>, p: &CrossEntropy<Self>) -> Result<()> {
        let grads = grads.map(|g| (g.d_hidden, g.d_head));
        loss::chunked_loss(&p.rows, p.temperature, logp, stats, grads, |r, lp, _, _| {
            let w = p.rows.weights[r];
            loss::RowLoss { loss: -w * lp, dlogp: -w }
        })?;
        stats[LossStat::RatioMin as usize] = 1.0;
        stats[LossStat::RatioMax as usize] = 1.0;
        Ok(())
    }

    fn sum_squares(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> Result<()> {
        ensure!(!acc.is_empty(), "sum_squares: empty accumulator");
        acc[0] = (acc[0] as f64 + adamw::sum_squares(x)) as f32;
        Ok(())
    }
    fn adamw(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, p: AdamW) -> Result<()> {
        let n = param.len();
        ensure!(grad.len() == n && m.len() == n && v.len() == n, "adamw: parameter, gradient and moments differ in length");
        ensure!(p.step >= 1, "adamw: steps count from 1");
        adamw::adamw(param, grad, m, v, p);
        Ok(())
    }

    fn sample(&self, logits: &Vec<f32>, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>> {
        ensure!(logits.len() >= params.len() * vocab, "sample: {} logits for {} rows of {vocab}", logits.len(), params.len());
        Ok(sampling::sample(logits, vocab, params))
    }
}
