//! The GRPO objective and its gradients on the GPU against the PyTorch fixtures directly (not
//! through the CPU): the loss, the KL and clip statistics, and every `grpo_grad.*`, for the three
//! tiny models. The GPU computes in bf16 from the fixtures' f32 weights rounded to bf16, so the
//! tolerances are bf16's: the scalars within 2% (plus a small floor), each gradient within 5% of
//! its tensor's largest value (as `cuda_train.rs` allows against the CPU). Skips (and says why)
//! without a GPU or without kernels in this build.

#[macro_use]
mod gpu_support;
mod common;

use atomrl::backend::{Backend, LossGrads};
use atomrl::model::checkpoint::read_all;
use atomrl::model::{param_infos, Model};
use atomrl::rl::objective::policy_loss;

const SCALAR_RTOL: f32 = 0.02;
const SCALAR_ATOL: f32 = 1e-3;
const GRAD_TOL: f32 = 0.05;

fn grpo_matches_pytorch(name: &str) {
    let g = gpu_or_skip!();
    let dir = common::fixture(name);
    let expected = read_all(&dir.join("expected.safetensors")).unwrap();
    let hp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (shape, ids) = &expected["input_ids"];
    let (batch, seq) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let cu: Vec<u32> = (0..=batch).map(|b| (b * seq) as u32).collect();
    let model = Model::load(g, &dir).unwrap();
    let c = &model.config;

    let (cfg, rows) = common::grpo_case(&expected, &hp, &ids, &cu, seq);
    let fwd = model.forward_train(g, &ids, &cu, true).unwrap();
    let mut grads = model.zero_grads(g).unwrap();
    let mut dh = g.zeros(ids.len() * c.hidden_size).unwrap();
    let (_, stats) = policy_loss(g, &fwd.hidden, model.weights.head(), c.hidden_size, c.vocab_size, &rows, &cfg, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() })).unwrap();
    model.backward(g, &fwd, &dh, &mut grads).unwrap();

    let m = stats.metrics();
    for (got, key) in [(m.loss, "grpo_loss"), (m.kl_mean, "grpo_kl_mean"), (m.clip_frac, "grpo_clip_frac")] {
        let want = expected[key].1[0];
        assert!((got - want).abs() <= SCALAR_RTOL * want.abs() + SCALAR_ATOL, "{name}: {key} gpu {got}, pytorch {want}");
    }
    let mut worst = 0f32;
    for (info, grad) in param_infos(c).visit().into_iter().zip(grads.visit()) {
        let got = g.to_f32(grad).unwrap();
        let want = &expected[&format!("grpo_grad.{}", info.name)].1;
        let scale = gpu_support::max_abs(want);
        let err = got.iter().zip(want).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(err <= GRAD_TOL * scale + 1e-7, "{name}: grpo_grad.{} off by {err} (scale {scale})", info.name);
        worst = worst.max(err / scale.max(1e-30));
    }
    eprintln!("{name}: largest grpo_grad error {worst:.2e} of the tensor's scale");
}

#[test]
fn tiny_llama_grpo_grads_match_pytorch_on_the_gpu() {
    grpo_matches_pytorch("tiny-llama");
}
#[test]
fn tiny_qwen2_grpo_grads_match_pytorch_on_the_gpu() {
    grpo_matches_pytorch("tiny-qwen2");
}
#[test]
fn tiny_qwen3_grpo_grads_match_pytorch_on_the_gpu() {
    grpo_matches_pytorch("tiny-qwen3");
}
