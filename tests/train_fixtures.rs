//! Gradients of cross-entropy and of the GRPO objective, and one AdamW step, against the
//! PyTorch fixtures for the three tiny models.

mod common;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{AdamW, Backend, LossGrads};
use atomrl::model::checkpoint::read_all;
use atomrl::model::{param_infos, Model, Recompute, Weights};
use atomrl::rl::objective::{cross_entropy, next_tokens, policy_loss};
use serde_json::Value;

use common::{fixture, grpo_case, position_rows, rel_err, Expected};


struct Fixture {
    model: Model<Cpu>,
    expected: Expected,
    hp: Value,
    ids: Vec<u32>,
    cu: Vec<u32>,
    seq: usize,
}

fn load(name: &str) -> Fixture {
    let dir = fixture(name);
    let expected = read_all(&dir.join("expected.safetensors")).unwrap();
    let hp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (shape, ids) = &expected["input_ids"];
    let (batch, seq) = (shape[0], shape[1]);
    let ids = ids.iter().map(|&x| x as u32).collect();
    let cu = (0..=batch).map(|b| (b * seq) as u32).collect();
    Fixture { model: Model::load(&Cpu, &dir).unwrap(), expected, hp, ids, cu, seq }
}

/// Every gradient against `prefix.<name>`: relative to the tensor's scale, with a small floor.
fn check_grads(name: &str, f: &Fixture, grads: &Weights<Vec<f32>>, prefix: &str) {
    let mut worst = 0f32;
    for (info, g) in param_infos(&f.model.config).zip(grads) {
        let (_, want) = &f.expected[&format!("{prefix}.{}", info.name)];
        let err = rel_err(g, want, 1e-6);
        assert!(err < 1e-3, "{name}: {prefix}.{} relative error {err}", info.name);
        worst = worst.max(err);
    }
    eprintln!("{name}: largest {prefix} relative error {worst:.2e}");
}

fn row_values(f: &Fixture, per_pos: &[f32]) -> Vec<f32> {
    position_rows(per_pos, f.ids.len(), f.seq)
}

fn ce(name: &str) {
    let f = load(name);
    let c = &f.model.config;
    let fwd = f.model.forward_train(&Cpu, &f.ids, &f.cu, true).unwrap();
    let n = f.ids.len() - (f.cu.len() - 1);
    let weights = row_values(&f, &vec![1.0 / n as f32; n]);
    let mut grads = f.model.zero_grads(&Cpu).unwrap();
    let mut dh = vec![0.0; fwd.hidden.len()];
    let targets = next_tokens(&f.ids, &f.cu);
    let (_, stats) = cross_entropy(&Cpu, &fwd.hidden, f.model.weights.head(), c.hidden_size, c.vocab_size, &targets, &weights, 7, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() })).unwrap();
    f.model.backward(&Cpu, &fwd, &dh, &mut grads).unwrap();
    let loss = stats.metrics().loss;
    let want = f.expected["ce_loss"].1[0];
    assert!(((loss - want) / want).abs() < 1e-4, "{name}: ce loss {loss} vs {want}");
    check_grads(name, &f, &grads, "ce_grad");

    // Recomputing every layer's activations in the backward pass gives the same gradients.
    let batch = f.model.pack(&Cpu, &f.ids, &f.cu).unwrap();
    let fwd = f.model.forward_packed(&Cpu, batch, Some(&Recompute::Always)).unwrap();
    let mut again = f.model.zero_grads(&Cpu).unwrap();
    let mut dh = vec![0.0; fwd.hidden.len()];
    cross_entropy(&Cpu, &fwd.hidden, f.model.weights.head(), c.hidden_size, c.vocab_size, &targets, &weights, 7, Some(LossGrads { d_hidden: &mut dh, d_head: again.head_mut() })).unwrap();
    f.model.backward(&Cpu, &fwd, &dh, &mut again).unwrap();
    for (a, b) in grads.visit().into_iter().zip(again.visit()) {
        assert_eq!(a, b, "{name}: recomputed activations change the gradients");
    }
}

fn grpo(name: &str) {
    let f = load(name);
    let c = &f.model.config;
    let (cfg, rows) = grpo_case(&f.expected, &f.hp, &f.ids, &f.cu, f.seq);
    let fwd = f.model.forward_train(&Cpu, &f.ids, &f.cu, true).unwrap();
    let mut grads = f.model.zero_grads(&Cpu).unwrap();
    let mut dh = vec![0.0; fwd.hidden.len()];
    let (logp, stats) = policy_loss(&Cpu, &fwd.hidden, f.model.weights.head(), c.hidden_size, c.vocab_size, &rows, &cfg, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() })).unwrap();
    f.model.backward(&Cpu, &fwd, &dh, &mut grads).unwrap();

    let m = stats.metrics();
    let close = |got: f32, key: &str| {
        let want = f.expected[key].1[0];
        assert!((got - want).abs() <= 1e-4 * want.abs() + 1e-6, "{name}: {key} {got} vs {want}");
    };
    close(m.loss, "grpo_loss");
    close(m.kl_mean, "grpo_kl_mean");
    close(m.clip_frac, "grpo_clip_frac");
    let want_logp = row_values(&f, &f.expected["grpo_logp"].1);
    let masked = |v: &[f32]| v.iter().zip(&rows.weights).map(|(x, w)| if *w != 0.0 { *x } else { 0.0 }).collect::<Vec<f32>>();
    let err = rel_err(&masked(&logp), &masked(&want_logp), 0.0);
    assert!(err < 1e-4, "{name}: grpo_logp relative error {err}");
    check_grads(name, &f, &grads, "grpo_grad");

    // One AdamW step from the initial weights with these gradients.
    let a = &f.hp["adamw"];
    let hp = AdamW {
        lr: a["lr"].as_f64().unwrap() as f32,
        beta1: a["beta1"].as_f64().unwrap() as f32,
        beta2: a["beta2"].as_f64().unwrap() as f32,
        eps: a["eps"].as_f64().unwrap() as f32,
        weight_decay: a["weight_decay"].as_f64().unwrap() as f32,
        step: 1,
        grad_scale: 1.0,
    };
    // Exactly, from PyTorch's gradients; and from ours within a small fraction of the learning
    // rate (the first Adam step is ~lr·g/(|g| + eps), so gradients near eps = 1e-8 amplify
    // their last-digit differences).
    let mut w = f.model.weights.clone();
    for ((info, p), ours) in param_infos(c).visit().into_iter().zip(w.visit_mut()).zip(grads.visit()) {
        let (_, want) = &f.expected[&format!("adamw_step1.{}", info.name)];
        let theirs = &f.expected[&format!("grpo_grad.{}", info.name)].1;
        for (g, tol) in [(theirs, 1e-6 * hp.lr), (ours, 0.05 * hp.lr)] {
            let mut p = p.clone();
            let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
            Cpu.adamw(&mut p, g, &mut m, &mut v, hp).unwrap();
            let err = p.iter().zip(want).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err <= tol + 5e-7 * want.iter().fold(0f32, |m, x| m.max(x.abs())), "{name}: adamw_step1.{} max error {err} (tolerance {tol})", info.name);
        }
    }
}

#[test]
fn tiny_llama_ce_grads_match_pytorch() {
    ce("tiny-llama");
}
#[test]
fn tiny_qwen2_ce_grads_match_pytorch() {
    ce("tiny-qwen2");
}
#[test]
fn tiny_qwen3_ce_grads_match_pytorch() {
    ce("tiny-qwen3");
}
#[test]
fn tiny_llama_grpo_and_adamw_match_pytorch() {
    grpo("tiny-llama");
}
#[test]
fn tiny_qwen2_grpo_and_adamw_match_pytorch() {
    grpo("tiny-qwen2");
}
#[test]
fn tiny_qwen3_grpo_and_adamw_match_pytorch() {
    grpo("tiny-qwen3");
}
