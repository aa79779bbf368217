//! The whole RL loop learns: a tiny random llama trained by `rl::run::train_with` (rollout,
//! grading by the localize skill's own grader, group advantages, the GRPO objective, AdamW)
//! goes from chance to solving a verifiable task. A sign, mask, advantage or optimizer bug
//! anywhere in the loop keeps the reward at chance.

mod run_support;

use std::time::Instant;

use atomrl::backend::cpu::Cpu;
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
fn grpo_run_learns_a_verifiable_task() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let cfg = load_config(Some(&config), &[]).unwrap();
    let out = tmp.path().join("run");
    train_with(&Cpu, &cfg, &RunOptions { output: out.clone(), resume: false }, &Localize).unwrap();

    let m = run_support::metrics(&out);
    let rewards: Vec<f64> = m.iter().map(|l| l["reward/mean"].as_f64().unwrap()).collect();
    eprintln!("rewards per step: {:?}", rewards.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>());
    eprintln!("took {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(m.len(), cfg.trainer.max_steps as usize);
    let head: f64 = rewards[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = rewards[rewards.len() - 5..].iter().sum::<f64>() / 5.0;
    // Chance: the first answer token is the right one of 13.
    assert!(head < 0.35, "the random model already solves the task: {rewards:?}");
    assert!(tail > 0.8, "mean reward of the last 5 steps is {tail:.3}: {rewards:?}");
    let last = m.last().unwrap();
    assert_eq!(last["eval/localize/avg@1"].as_f64(), Some(1.0), "greedy answers after training: {last}");
    assert!(m.iter().all(|l| l["train/skipped_updates"].as_f64() == Some(0.0)));
    // One runtime samples and trains: the trainer's log-probs are the rollout engine's.
    let mismatch = m.iter().filter_map(|l| l["rollout/logprob_mismatch"].as_f64()).fold(0.0, f64::max);
    assert!(mismatch < 1e-6, "rollout/trainer log-prob mismatch {mismatch}");
}
