//! The whole RL loop learns: a tiny random llama trained by `rl::run::train_with` (rollout,
//! grading by the localize skill's own grader, group advantages, the GRPO objective, AdamW)
//! goes from chance to solving a verifiable task. A sign, mask, advantage or optimizer bug
//! anywhere in the loop keeps the reward at chance.

mod run_support;

use std::time::Instant;

use atomrl::backend::cpu::Cpu;
use atomrl::rl::run::{load_config, train_with, RunOptions};
use run_support::Localize;

#[test]
fn grpo_run_learns_a_verifiable_task() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let cfg = load_config(Some(&config), &[]).unwrap();
    let out = tmp.path().join("run");
    train_with(&Cpu, &cfg, &RunOptions { output: out.clone(), resume: false }, &Localize).unwrap();

    let m = run_support::metrics(&out);
    eprintln!("took {:.1}s", started.elapsed().as_secs_f64());
    let mismatch = run_support::assert_learned(&m, cfg.trainer.max_steps as usize);
    // One runtime samples and trains: the trainer's log-probs are the rollout engine's.
    assert!(mismatch < 1e-6, "rollout/trainer log-prob mismatch {mismatch}");
}
