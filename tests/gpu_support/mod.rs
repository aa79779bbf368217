//! What the CUDA tests share: the GPU (or why there is none) and a small reproducible generator.
#![allow(dead_code)]

use std::sync::OnceLock;

use atomrl::backend::cuda::{kernels_runnable, CudaBackend};

/// The GPU backend, started once per test binary; `None` where there is no GPU or no kernels.
/// With `ATOMRL_REQUIRE_GPU` set (scripts/gpu-check.sh sets it), no GPU is a failure instead,
/// so that a run meant to check the kernels cannot pass by skipping them.
pub fn gpu() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Option<CudaBackend>> = OnceLock::new();
    GPU.get_or_init(|| match kernels_runnable() {
        Ok(()) => Some(CudaBackend::new(0).expect("a GPU is present but the CUDA backend failed to start")),
        Err(why) if std::env::var_os("ATOMRL_REQUIRE_GPU").is_some() => panic!("ATOMRL_REQUIRE_GPU is set, but: {why}"),
        Err(_) => None,
    })
    .as_ref()
}

/// Gets the GPU or returns from the test, having said why.
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match $crate::gpu_support::gpu() {
            Some(g) => g,
            None => {
                eprintln!("skipped: {}", atomrl::backend::cuda::kernels_runnable().err().unwrap_or_default());
                return;
            }
        }
    };
}

/// The largest magnitude in `v` (the scale tolerances are taken against).
pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The trainer's SplitMix64 generator, so failures reproduce. Each test file adds the draws it
/// needs in its own `impl Rng`.
#[allow(dead_code)] // not every test binary draws numbers
pub struct Rng(atomrl::rl::trainer::Rng);

#[allow(dead_code)]
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(atomrl::rl::trainer::Rng(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
