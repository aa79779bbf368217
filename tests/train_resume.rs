//! Training checkpoints: a run killed after step k and resumed from `latest` ends with exactly
//! the weights and losses of an uninterrupted run; truncated checkpoints are rejected and the
//! previous one is used.

mod common;

use std::path::Path;

use atomrl::backend::cpu::Cpu;
use atomrl::model::{Model, Recompute, Weights};
use atomrl::rl::advantages::{group_advantages, AdvantageConfig};
use atomrl::rl::checkpoint::{self, LATEST};
use atomrl::rl::objective::ObjectiveConfig;
use atomrl::rl::optimizer::AdamWConfig;
use atomrl::rl::schedule::{Decay, LrSchedule};
use atomrl::rl::trainer::{MicroBatch, TrainConfig, Trainer};

use common::{random_weights, tiny_config};

const VOCAB: usize = 32;

/// A fresh trainer on a tiny random llama whose `config.json` lives in `source`.
fn new_trainer(source: &Path, recompute: bool) -> Trainer<Cpu> {
    // Recomputing one of the two layers exercises both paths of the backward pass.
    let recompute = if recompute { Recompute::Layers(vec![1]) } else { Recompute::Never };
    let cfg = tiny_config("llama", VOCAB);
    let weights = random_weights(&cfg, 11);
    let model = Model::from_host(&Cpu, cfg.clone(), &weights).unwrap();
    atomrl::model::checkpoint::save_model_dir(source, &cfg, &weights, source, atomrl::model::checkpoint::SaveDtype::F32).unwrap();
    std::fs::write(source.join("config.json"), config_json()).unwrap();
    let train = TrainConfig {
        objective: ObjectiveConfig { clip_high: 0.28, temperature: 0.9, ..ObjectiveConfig::default() },
        optimizer: AdamWConfig { max_grad_norm: Some(0.5), weight_decay: 0.1, ..AdamWConfig::default() },
        schedule: LrSchedule { lr: 3e-3, warmup_steps: 2, decay: Decay::Cosine, total_steps: 8, min_lr_ratio: 0.1 },
        recompute,
        seed: 1234,
        keep_last: 2,
    };
    Trainer::new(&Cpu, model, train, source).unwrap()
}

fn config_json() -> String {
    format!(
        r#"{{"model_type": "llama", "tie_word_embeddings": false, "vocab_size": {VOCAB}, "hidden_size": 24, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 64, "hidden_act": "silu"}}"#
    )
}

/// Synthetic rollouts drawn with the trainer's generator: 2 micro-batches of 2 prompts × 2
/// completions; the reward is the fraction of completion tokens in the lower half of the vocab.
fn synthetic_batch(t: &mut Trainer<Cpu>) -> Vec<MicroBatch> {
    (0..2)
        .map(|_| {
            let mut b = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
            let mut rewards = Vec::new();
            let mut groups = Vec::new();
            for g in 0..2u32 {
                let prompt: Vec<u32> = (0..3).map(|_| t.rng.below(VOCAB as u64) as u32).collect();
                t.data_position += 1;
                for _ in 0..2 {
                    let n = 3 + t.rng.below(4) as usize;
                    let completion: Vec<u32> = (0..n).map(|_| t.rng.below(VOCAB as u64) as u32).collect();
                    rewards.push(completion.iter().filter(|&&x| (x as usize) < VOCAB / 2).count() as f32 / n as f32);
                    groups.push(g);
                    b.tokens.extend(&prompt);
                    b.tokens.extend(&completion);
                    // Rows prompt_len-1 .. len-2 predict the completion.
                    let len = prompt.len() + n;
                    b.mask.extend((0..len).map(|r| if r + 1 >= prompt.len() && r + 1 < len { 1.0 } else { 0.0 }));
                    b.cu_seqlens.push(b.tokens.len() as u32);
                }
            }
            b.advantages = group_advantages(&rewards, &groups, &AdvantageConfig::grpo()).unwrap().advantages;
            b
        })
        .collect()
}

/// Runs steps until `until`, saving every `every` steps; returns the losses of all steps run.
fn run(t: &mut Trainer<Cpu>, run_dir: &Path, until: u64, every: u64) {
    while t.step < until {
        let batch = synthetic_batch(t);
        let report = t.step(&Cpu, &batch).unwrap();
        let mut losses: Vec<f32> = serde_json::from_value(t.history.clone()).unwrap_or_default();
        losses.push(report.policy.loss);
        t.history = serde_json::to_value(&losses).unwrap();
        if t.step % every == 0 {
            t.save(&Cpu, run_dir).unwrap();
        }
    }
}

fn host(t: &Trainer<Cpu>) -> Weights<Vec<f32>> {
    t.model.to_host(&Cpu).unwrap()
}

fn resume_matches_uninterrupted(recompute: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let (full_dir, split_dir) = (tmp.path().join("full"), tmp.path().join("split"));

    let mut full = new_trainer(&source, recompute);
    run(&mut full, &full_dir, 6, 2);

    // Killed after step 5: the last checkpoint is step 4, so step 5 is redone.
    let mut first = new_trainer(&source, recompute);
    run(&mut first, &split_dir, 5, 2);
    drop(first);
    assert_eq!(std::fs::read_to_string(split_dir.join(LATEST)).unwrap().trim(), "step_4");
    let (mut resumed, rejected) = Trainer::resume(&Cpu, &split_dir).unwrap().expect("a checkpoint");
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(resumed.step, 4);
    run(&mut resumed, &split_dir, 6, 2);

    assert_eq!(full.history, resumed.history, "losses differ");
    let losses: Vec<f32> = serde_json::from_value(full.history.clone()).unwrap();
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|l| l.is_finite()));
    for ((a, b), info) in host(&full).visit().into_iter().zip(host(&resumed).visit()).zip(full.infos.visit()) {
        assert!(a == b, "{} differs after resuming", info.name);
    }
    assert_eq!((full.rng, full.data_position), (resumed.rng, resumed.data_position));
    // keep_last = 2, and each checkpoint is a loadable model directory.
    let mut kept: Vec<String> = std::fs::read_dir(&full_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    kept.sort();
    assert_eq!(kept, vec!["latest", "step_4", "step_6"]);
    let reloaded = Model::load(&Cpu, &full_dir.join("step_6")).unwrap();
    for (a, b) in reloaded.weights.visit().into_iter().zip(host(&full).visit()) {
        assert!(a == b);
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    resume_matches_uninterrupted(false);
}

#[test]
fn resumed_run_matches_uninterrupted_run_with_recomputation() {
    resume_matches_uninterrupted(true);
}

#[test]
fn truncated_checkpoint_is_rejected_and_the_previous_one_used() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let run_dir = tmp.path().join("run");
    let mut t = new_trainer(&source, false);
    t.cfg.keep_last = 3;
    run(&mut t, &run_dir, 3, 1);

    for (file, cut) in [("model.safetensors", 0.5), ("optimizer.safetensors", 0.9), ("trainer_state.json", 0.5)] {
        let dir = run_dir.join("step_3");
        let path = dir.join(file);
        let saved = std::fs::read(&path).unwrap();
        std::fs::write(&path, &saved[..(saved.len() as f64 * cut) as usize]).unwrap();
        let err = format!("{:#}", checkpoint::validate(&dir).unwrap_err());
        assert!(err.contains(file) && (err.contains("truncated")), "unclear error for {file}: {err}");
        let (resumed, rejected) = Trainer::resume(&Cpu, &run_dir).unwrap().unwrap();
        assert_eq!(resumed.step, 2, "after truncating {file}");
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].starts_with("step_3") && rejected[0].contains(file), "{rejected:?}");
        std::fs::write(&path, &saved).unwrap();
    }
    // Intact again: step 3 is used.
    assert_eq!(Trainer::resume(&Cpu, &run_dir).unwrap().unwrap().0.step, 3);

    // A crash while saving leaves a temporary directory that resume ignores.
    std::fs::create_dir_all(run_dir.join(".step_4.tmp")).unwrap();
    std::fs::write(run_dir.join(".step_4.tmp/model.safetensors"), b"partial").unwrap();
    assert_eq!(Trainer::resume(&Cpu, &run_dir).unwrap().unwrap().0.step, 3);

    // No usable checkpoint at all is an error naming every candidate.
    for s in 1..=3 {
        std::fs::write(run_dir.join(format!("step_{s}/model.safetensors")), b"x").unwrap();
    }
    let err = format!("{:#}", Trainer::resume(&Cpu, &run_dir).err().expect("no usable checkpoint"));
    assert!(err.contains("step_1") && err.contains("step_3"), "{err}");
}

/// One step over two micro-batches gives the gradients and loss of one step over the same
/// sequences packed into one batch (the loss weights are normalised over the whole step).
#[test]
fn micro_batches_accumulate_to_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut split = new_trainer(&tmp.path().join("a"), false);
    let mut whole = new_trainer(&tmp.path().join("b"), false);
    for agg in [atomrl::rl::objective::LossAgg::TokenMean, atomrl::rl::objective::LossAgg::SeqMeanTokenMean] {
        split.cfg.objective.loss_agg = agg;
        whole.cfg.objective.loss_agg = agg;
        let parts = synthetic_batch(&mut split);
        let mut merged = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
        for p in &parts {
            let base = merged.tokens.len() as u32;
            merged.tokens.extend(&p.tokens);
            merged.mask.extend(&p.mask);
            merged.advantages.extend(&p.advantages);
            merged.cu_seqlens.extend(p.cu_seqlens[1..].iter().map(|c| c + base));
        }
        let a = split.step(&Cpu, &parts).unwrap();
        let b = whole.step(&Cpu, &[merged]).unwrap();
        assert!((a.policy.loss - b.policy.loss).abs() <= 1e-5 * b.policy.loss.abs() + 1e-7, "{agg:?}: {} vs {}", a.policy.loss, b.policy.loss);
        assert_eq!(a.policy.tokens, b.policy.tokens);
        for ((x, y), info) in split.grads().unwrap().visit().into_iter().zip(whole.grads().unwrap().visit()).zip(split.infos.visit()) {
            let err = common::rel_err(x, y, 1e-6);
            assert!(err < 1e-4, "{agg:?}: {} gradient differs by {err}", info.name);
        }
        // Keep both on the same weights for the next round.
        whole.model.weights = split.model.weights.clone();
        whole.opt.m = split.opt.m.clone();
        whole.opt.v = split.opt.v.clone();
    }
}

/// The supervised step lowers the mean cross-entropy of the batch it trains on.
#[test]
fn sft_steps_lower_the_cross_entropy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = new_trainer(&tmp.path().join("s"), false);
    let batch = synthetic_batch(&mut t);
    let losses: Vec<f32> = (0..5).map(|_| t.step_ce(&Cpu, &batch).unwrap().policy.loss).collect();
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    assert!(losses[0] > 2.0 && losses[0] < 5.0, "about ln(32) at the start: {losses:?}");
}
