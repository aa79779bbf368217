//! What the benchmarks share: the peaks of the GPUs we expect, a small reproducible generator
//! and random model weights.
#![allow(dead_code)]

use atomrl::model::{param_infos, ModelConfig, Weights};

/// Dense bf16 tensor-core TFLOP/s and HBM GB/s of the GPUs we expect, by name.
pub fn gpu_peaks(name: &str) -> (f64, f64) {
    let n = name.to_ascii_uppercase();
    if n.contains("H200") {
        (989.0, 4800.0)
    } else if n.contains("H100") && n.contains("PCIE") {
        (756.0, 2000.0)
    } else if n.contains("H100") {
        (989.0, 3350.0)
    } else if n.contains("A100") {
        (312.0, if n.contains("80GB") { 2039.0 } else { 1555.0 })
    } else if n.contains("L40S") {
        (362.0, 864.0)
    } else {
        (f64::NAN, f64::NAN)
    }
}

/// A 64-bit linear congruential generator: uniform floats in [-1, 1).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Weights for `cfg`: norms 1, every matrix uniform in ±0.02 (seed 7).
pub fn random_weights(cfg: &ModelConfig) -> anyhow::Result<Weights<Vec<f32>>> {
    let mut rng = Lcg(7);
    param_infos(cfg).try_map(|p| {
        let scale = if p.shape.len() == 1 { 0.0 } else { 0.02 };
        Ok((0..p.numel()).map(|_| if scale == 0.0 { 1.0 } else { scale * rng.next() }).collect::<Vec<f32>>())
    })
}
