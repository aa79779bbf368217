//! The CPU reference backend: f32 everywhere, rayon across rows and heads, the `gemm` crate for
//! matrix products. It is the specification every CUDA kernel is tested against, so each op is
//! written the plain way; the functions carry the same names as the kernels in `kernels/`.

mod attention;
mod ops;
mod sampling;
mod skinny;

use anyhow::{ensure, Result};

use super::{Backend, CausalAttn, Gemm, PagedAttn, Rope, SampleParams, Sampled};

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

    fn copy_within(&self, t: &mut Vec<f32>, src_off: usize, dst_off: usize, len: usize) -> Result<()> {
        ensure!(src_off.max(dst_off) + len <= t.len(), "copy_within out of bounds");
        ensure!(src_off + len <= dst_off || dst_off + len <= src_off, "copy_within ranges overlap");
        t.copy_within(src_off..src_off + len, dst_off);
        Ok(())
    }

    fn embedding(&self, out: &mut Vec<f32>, table: &Vec<f32>, ids: &Vec<u32>, rows: usize, dim: usize) -> Result<()> {
        ops::embedding(out, table, ids, rows, dim)
    }
    fn rms_norm(&self, out: &mut Vec<f32>, x: &Vec<f32>, weight: &Vec<f32>, rows: usize, dim: usize, eps: f32) -> Result<()> {
        ops::rms_norm(out, x, weight, rows, dim, eps);
        Ok(())
    }
    fn gemm(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, g: Gemm) -> Result<()> {
        ops::gemm(out, a, b, g)
    }
    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        ops::add_bias(x, bias, rows, dim);
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
    fn swiglu(&self, out: &mut Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>) -> Result<()> {
        ops::swiglu(out, gate, up);
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
    fn sample(&self, logits: &Vec<f32>, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>> {
        ensure!(logits.len() >= params.len() * vocab, "sample: {} logits for {} rows of {vocab}", logits.len(), params.len());
        Ok(sampling::sample(logits, vocab, params))
    }
}
