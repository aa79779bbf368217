//! The optimizer's inner loops: squared norm of a gradient and one AdamW step.

use rayon::prelude::*;

use crate::backend::AdamW;

/// Elements per parallel block; fixed so the norm sums in the same order on every run.
const BLOCK: usize = 1 << 14;

pub fn sum_squares(x: &[f32]) -> f64 {
    let partials: Vec<f64> = x.par_chunks(BLOCK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).collect();
    partials.iter().sum()
}

/// PyTorch's `AdamW` (`foreach=False` arithmetic): decay, then the moments, then
/// `p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], p: AdamW) {
    let t = p.step as i32;
    let bc1 = 1.0 - (p.beta1 as f64).powi(t);
    let bc2_sqrt = (1.0 - (p.beta2 as f64).powi(t)).sqrt() as f32;
    let step_size = (p.lr as f64 / bc1) as f32;
    let decay = 1.0 - p.lr * p.weight_decay;
    let (b1, b2) = (p.beta1, p.beta2);
    param
        .par_chunks_mut(BLOCK)
        .zip(grad.par_chunks(BLOCK))
        .zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK)))
        .for_each(|((w, g), (m, v))| {
            for i in 0..w.len() {
                let g = g[i] * p.grad_scale;
                w[i] *= decay;
                m[i] += (g - m[i]) * (1.0 - b1);
                v[i] = v[i] * b2 + (1.0 - b2) * g * g;
                let denom = v[i].sqrt() / bc2_sqrt + p.eps;
                w[i] -= step_size * m[i] / denom;
            }
        });
}
