//! One trainer step on the GPU against the same step on the CPU: a GRPO step (two micro-batches,
//! KL penalty, clipping) and an SFT (cross-entropy) step of each fixture model, from the same
//! weights (rounded to bf16, so both backends start from identical values). Compared: the loss,
//! the gradient norm, every gradient, and the updated f32 master weights; then the bf16
//! compute copies against their masters, and a checkpoint round trip. Without a GPU (or without
//! kernels in this build) each test prints why it is skipped and passes.
//!
//! Tolerances (bf16 compute: activations, the attention probabilities and `dL/dlogits` are
//! rounded to bf16, about 2^-9 relative each, through two layers):
//! - loss: `|gpu - cpu| <= LOSS_RTOL·|cpu| + LOSS_ATOL`;
//! - gradient norm: relative `GRAD_NORM_RTOL`;
//! - each gradient: max |gpu - cpu| over the tensor's max |cpu| at most `GRAD_TOL`;
//! - updated masters: AdamW's first step is `lr·g/(|g| + eps)`, about `±lr` per element
//!   whatever the gradient's size, so two backends differ by up to `2·lr` where the gradient's
//!   sign differs (gradients near zero) and by almost nothing elsewhere: every element within
//!   `2·lr` (plus f32 rounding), and the mean difference at most `MEAN_STEP_TOL·lr`.

mod step_support;


#[macro_use]
mod gpu_support;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::cuda::CudaBackend;
use atomrl::model::Weights;
use atomrl::rl::trainer::Trainer;

use step_support::{bf16, host, run_step, step_case, trainer};

const LOSS_RTOL: f32 = 0.02;
const LOSS_ATOL: f32 = 5e-3;
const GRAD_NORM_RTOL: f32 = 0.05;
const GRAD_TOL: f32 = 0.05;
/// At most 1 element in 8 with the opposite sign of gradient.
const MEAN_STEP_TOL: f32 = 0.25;

const FAMILIES: [&str; 3] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3"];



fn masters(g: &CudaBackend, t: &Trainer<CudaBackend>) -> Weights<Vec<f32>> {
    host(g, t.opt.master.as_ref().expect("the CUDA backend keeps master weights"))
}

/// One step of fixture `name` on both backends, compared as the module header says.
fn compare_step(g: &CudaBackend, name: &str, ce: bool) {
    let what = if ce { "sft" } else { "grpo" };
    let case = step_case(name);
    let mut cpu = trainer(&Cpu, &case);
    let mut gpu = trainer(g, &case);
    let (want, got) = (run_step(&Cpu, &mut cpu, &case, ce), run_step(g, &mut gpu, &case, ce));
    g.synchronize().unwrap();

    let (l_cpu, l_gpu) = (want.policy.loss, got.policy.loss);
    assert!((l_gpu - l_cpu).abs() <= LOSS_RTOL * l_cpu.abs() + LOSS_ATOL, "{name} {what}: loss gpu {l_gpu} cpu {l_cpu}");
    assert_eq!(got.policy.tokens, want.policy.tokens, "{name} {what}: token counts differ");
    let (n_cpu, n_gpu) = (want.optimizer.grad_norm, got.optimizer.grad_norm);
    assert!((n_gpu - n_cpu).abs() <= GRAD_NORM_RTOL * n_cpu, "{name} {what}: grad norm gpu {n_gpu} cpu {n_cpu}");

    let infos = cpu.infos.visit();
    let (g_cpu, g_gpu) = (cpu.grads().unwrap(), host(g, gpu.grads().unwrap()));
    for ((a, b), info) in g_gpu.visit().into_iter().zip(g_cpu.visit()).zip(&infos) {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= GRAD_TOL * scale + 1e-7, "{name} {what}: gradient of {} off by {err} (scale {scale})", info.name);
    }

    let lr = want.optimizer.lr;
    let (mut sum, mut count) = (0f64, 0usize);
    for ((a, b), info) in masters(g, &gpu).visit().into_iter().zip(cpu.model.weights.visit()).zip(&infos) {
        for (x, y) in a.iter().zip(b) {
            let d = (x - y).abs();
            assert!(d <= 2.0 * lr * 1.001 + 4.0 * f32::EPSILON * y.abs(), "{name} {what}: {} updated {x} on the GPU, {y} on the CPU", info.name);
            sum += d as f64;
            count += 1;
        }
    }
    let mean = (sum / count as f64) as f32;
    assert!(mean <= MEAN_STEP_TOL * lr, "{name} {what}: mean update difference {mean} (lr {lr})");
    eprintln!("{name} {what}: loss {l_gpu} vs {l_cpu}, grad norm {n_gpu} vs {n_cpu}, mean weight difference {:.3} lr", mean / lr);

    // The bf16 compute copies are the masters rounded to nearest even (the cast kernel).
    for ((w, m), info) in host(g, &gpu.model.weights).visit().into_iter().zip(masters(g, &gpu).visit()).zip(&infos) {
        assert!(w.iter().zip(m).all(|(a, b)| *a == bf16(*b)), "{name}: the compute copy of {} is not its master in bf16", info.name);
    }
}

#[test]
fn grpo_step_matches_cpu() {
    let g = gpu_or_skip!();
    for name in FAMILIES {
        compare_step(g, name, false);
    }
}

#[test]
fn sft_step_matches_cpu() {
    let g = gpu_or_skip!();
    for name in FAMILIES {
        compare_step(g, name, true);
    }
}

/// A checkpoint saved from the GPU holds the f32 masters; resuming restores masters, moments
/// and compute copies exactly.
#[test]
fn checkpoint_restores_masters_exactly() {
    let g = gpu_or_skip!();
    let case = step_case("tiny-qwen3");
    let run_dir = tempfile::tempdir().unwrap();
    let mut t = trainer(g, &case);
    run_step(g, &mut t, &case, false);
    t.save(g, run_dir.path()).unwrap();
    let (resumed, rejected) = Trainer::resume(g, run_dir.path()).unwrap().expect("a checkpoint");
    assert!(rejected.is_empty(), "{rejected:?}");
    let same = |a: &Weights<Vec<f32>>, b: &Weights<Vec<f32>>| a.visit() == b.visit();
    assert!(same(&masters(g, &t), &masters(g, &resumed)), "masters differ after resuming");
    assert!(same(&host(g, &t.model.weights), &host(g, &resumed.model.weights)), "compute copies differ after resuming");
    assert!(same(&host(g, &t.opt.m), &host(g, &resumed.opt.m)) && same(&host(g, &t.opt.v), &host(g, &resumed.opt.v)), "moments differ after resuming");
    let saved = atomrl::model::checkpoint::load_weights(&run_dir.path().join("step_1"), &case.config).unwrap();
    assert!(same(&saved, &masters(g, &t)), "the checkpoint does not hold the masters");
}
