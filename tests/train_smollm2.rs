//! The training path on the real SmolLM2-135M-Instruct (converted by `scripts/fetch-smollm2.sh`):
//! the trainer's log-probs of sampled completions equal the rollout engine's (one runtime, no
//! numerics gap), and one GRPO step raises the log-probs of the rewarded completions against the
//! others. Slow: runs with `ATOMRL_FULL=1` and the converted model present.

use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::model::Model;
use atomrl::rl::objective::{next_tokens, policy_loss, ObjectiveConfig, PolicyRows};
use atomrl::rl::optimizer::AdamWConfig;
use atomrl::rl::schedule::LrSchedule;
use atomrl::rl::trainer::{MicroBatch, TrainConfig, Trainer};
use atomrl::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};
use atomrl::tokenizer::Tokenizer;

fn smollm2() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if std::env::var("ATOMRL_FULL").is_ok_and(|v| v == "1") && dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: needs ATOMRL_FULL=1 and {} (scripts/fetch-smollm2.sh)", dir.display());
        None
    }
}

const PROMPT: &str = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n";

/// Per-row log-probs of `batch` under `model` at temperature 1.
fn logprobs(model: &Model<Cpu>, batch: &MicroBatch) -> Vec<f32> {
    let fwd = model.forward_train(&Cpu, &batch.tokens, &batch.cu_seqlens, false).unwrap();
    let rows = PolicyRows { targets: next_tokens(&batch.tokens, &batch.cu_seqlens), weights: batch.mask.clone(), advantages: vec![0.0; batch.tokens.len()], ..PolicyRows::default() };
    let c = &model.config;
    policy_loss(&Cpu, &fwd.hidden, model.weights.head(), c.hidden_size, c.vocab_size, &rows, &ObjectiveConfig::default(), None).unwrap().0
}

#[test]
fn grpo_step_on_smollm2_uses_the_rollout_numerics_and_moves_the_right_way() {
    let Some(dir) = smollm2() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let model = Model::load(&Cpu, &dir).unwrap();
    let prompt = tok.encode(PROMPT).unwrap();
    let requests = (0..4)
        .map(|id| GenRequest { id, prompt: prompt.clone(), sampling: SamplingConfig { temperature: 1.0, max_new_tokens: 12, seed: 7, ..SamplingConfig::default() } })
        .collect();
    let opts = EngineOptions { stop_ids: tok.stop_ids.clone(), ..EngineOptions::default() };
    let outs = generate(&Cpu, &model, requests, &opts, Some(&tok), |_, _| {}).unwrap();

    let mut batch = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
    let mut rollout = Vec::new();
    for o in &outs {
        let start = batch.tokens.len();
        batch.tokens.extend(&o.prompt_ids);
        batch.tokens.extend(&o.completion_ids);
        let len = batch.tokens.len() - start;
        batch.mask.extend((0..len).map(|r| if r + 1 >= o.prompt_ids.len() && r + 1 < len { 1.0 } else { 0.0 }));
        rollout.extend(std::iter::repeat_n(0.0, o.prompt_ids.len() - 1));
        rollout.extend(&o.completion_logprobs);
        rollout.push(0.0);
        batch.cu_seqlens.push(batch.tokens.len() as u32);
    }
    // The first two completions are "rewarded".
    batch.advantages = vec![1.0, 1.0, -1.0, -1.0];

    let before = logprobs(&model, &batch);
    let worst = before.iter().zip(&rollout).zip(&batch.mask).filter(|(_, m)| **m != 0.0).map(|((a, b), _)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("largest trainer/rollout log-prob difference: {worst}");
    assert!(worst < 2e-3, "trainer and rollout log-probs differ by up to {worst}");

    let cfg = TrainConfig {
        objective: ObjectiveConfig { clip_high: 0.28, ..ObjectiveConfig::default() },
        optimizer: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        schedule: LrSchedule { lr: 2e-5, ..LrSchedule::default() },
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&Cpu, model, cfg, &dir).unwrap();
    batch.rollout_logp = Some(rollout);
    let report = trainer.step(&Cpu, std::slice::from_ref(&batch)).unwrap();
    assert!(report.policy.loss.is_finite() && report.optimizer.grad_norm.is_finite(), "{report:?}");
    assert!(report.policy.mismatch_kl > 0.0 && report.policy.mismatch_kl < 1e-6, "rollout/trainer mismatch {}", report.policy.mismatch_kl);

    let after = logprobs(&trainer.model, &batch);
    let gain = |s: usize| {
        let (a, b) = (batch.cu_seqlens[s] as usize, batch.cu_seqlens[s + 1] as usize);
        (a..b).map(|r| (after[r] - before[r]) * batch.mask[r]).sum::<f32>()
    };
    let (up, down) = (gain(0) + gain(1), gain(2) + gain(3));
    eprintln!("{report:?}\nlog-prob change: rewarded {up}, others {down}");
    assert!(up > 0.0 && down < 0.0, "rewarded completions moved by {up}, the others by {down}");
}
