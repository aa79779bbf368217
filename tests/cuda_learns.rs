//! The whole RL loop learns on the CUDA backend: the run of `train_learns.rs` (a tiny random
//! llama, the localize skill's grader, GRPO, AdamW), with heads of 16 for the kernels, generated
//! and trained on the GPU: bf16 weights and activations, f32 master weights and optimizer state.
//! Also reports the rollout/trainer log-prob mismatch of one runtime in bf16. Skips (and says
//! why) without a GPU or without kernels in this build.

#[macro_use]
mod gpu_support;
mod run_support;

use atomrl::rl::environment::Environment;
use atomrl::rl::run::{load_config, train_with, RunOptions};
use atomrl::skills::{localize, Grade, Task};

/// The localize skill's pure-text grading, without the sandbox the full grader sets up.
struct Localize;

impl Environment for Localize {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        items
            .iter()
            .map(|(t, c)| {
                let o = localize::grade(t, c);
                Grade { reward: o.reward, reason: o.reason.as_str().into(), detail: o.detail, metrics: o.metrics, timings: Default::default() }
            })
            .collect()
    }
}

#[test]
fn grpo_run_learns_a_verifiable_task_on_the_gpu() {
    let g = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    run_support::write_model_sized(&tmp.path().join("model"), 7, 64);
    let cfg = load_config(Some(&config), &["model.device=cuda".into()]).unwrap();
    let out = tmp.path().join("run");
    train_with(g, &cfg, &RunOptions { output: out.clone(), resume: false }, &Localize).unwrap();

    let m = run_support::metrics(&out);
    let rewards: Vec<f64> = m.iter().map(|l| l["reward/mean"].as_f64().unwrap()).collect();
    eprintln!("rewards per step: {:?}", rewards.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>());
    assert_eq!(m.len(), cfg.trainer.max_steps as usize);
    let head: f64 = rewards[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = rewards[rewards.len() - 5..].iter().sum::<f64>() / 5.0;
    // Chance: the first answer token is the right one of 13.
    assert!(head < 0.35, "the random model already solves the task: {rewards:?}");
    assert!(tail > 0.8, "mean reward of the last 5 steps is {tail:.3}: {rewards:?}");
    let last = m.last().unwrap();
    assert_eq!(last["eval/localize/avg@1"].as_f64(), Some(1.0), "greedy answers after training: {last}");
    assert!(m.iter().all(|l| l["train/skipped_updates"].as_f64() == Some(0.0)));
    // Generation (paged decode) and training (packed prefill, chunked loss) are different kernels
    // over the same bf16 weights; their log-probs of the sampled tokens differ by bf16 rounding.
    let mismatch: Vec<f64> = m.iter().filter_map(|l| l["rollout/logprob_mismatch"].as_f64()).collect();
    let worst = mismatch.iter().copied().fold(0.0, f64::max);
    eprintln!("rollout/trainer log-prob mismatch: mean {:.2e}, worst step {worst:.2e}", mismatch.iter().sum::<f64>() / mismatch.len().max(1) as f64);
    assert!(worst < 1e-2, "rollout/trainer log-prob mismatch {worst}");
}
