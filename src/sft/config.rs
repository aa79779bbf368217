//! The configuration of `atomrl sft`: the RL run config's `model`, `optimizer`, `schedule` and
//! `checkpoint` sections as they are, plus `data`, `trainer` and `eval` sections of its own.
//! `configs/sft-demo.toml` shows every section.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::rl::optimizer::AdamWConfig;
use crate::rl::run_config::{CheckpointSection, ModelSection};
use crate::rl::schedule::LrSchedule;
use crate::skills::Tier;

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    pub model: ModelSection,
    pub data: SftData,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub trainer: SftTrainer,
    pub checkpoint: CheckpointSection,
    pub eval: SftEval,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftData {
    /// Example files: JSONL of `{"messages": [{"role", "content"}, ...]}`.
    pub train: Vec<PathBuf>,
    /// Skill task files whose gold answers become examples on the fly (train split only),
    /// as `atomrl sft-data` would write them (without `--verify`).
    pub tasks: Vec<PathBuf>,
    /// Keep only tasks of these tiers (`easy`, `normal`); empty keeps all.
    pub tiers: Vec<Tier>,
    /// Held-out example files: their loss is reported as `eval/loss`.
    pub eval: Vec<PathBuf>,
    /// Examples longer than this (in tokens, template included) are left out (reported).
    pub max_tokens: usize,
}

impl Default for SftData {
    fn default() -> Self {
        SftData { train: Vec::new(), tasks: Vec::new(), tiers: Vec::new(), eval: Vec::new(), max_tokens: 2048 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftTrainer {
    /// Optimizer steps; 0 runs `epochs` passes over the examples.
    pub max_steps: u64,
    /// Passes over the examples when `max_steps` is 0 (may be fractional).
    pub epochs: f64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// When non-zero, a step takes examples up to this many tokens instead (at least one).
    pub batch_tokens: usize,
    /// Most tokens in one micro-batch (whole examples are packed; a longer one goes alone).
    pub micro_batch_tokens: usize,
    /// Seeds the example order (reshuffled every epoch).
    pub seed: u64,
    /// Recompute activations in the backward pass instead of keeping them.
    pub recompute: crate::model::Recompute,
}

impl Default for SftTrainer {
    fn default() -> Self {
        SftTrainer { max_steps: 0, epochs: 1.0, batch_size: 8, batch_tokens: 0, micro_batch_tokens: 4096, seed: 0, recompute: crate::model::Recompute::Never }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftEval {
    /// Evaluate every this many steps (0: only before and after, when `before_and_after`).
    pub every: u64,
    /// Evaluate before the first step and after the last.
    pub before_and_after: bool,
    /// Held-out skill task files: the model's own answers are graded in the sandbox.
    pub tasks: Vec<PathBuf>,
    /// Keep only held-out tasks of these tiers; empty keeps all.
    pub tiers: Vec<Tier>,
    /// At most this many held-out tasks per skill (0: all).
    pub max_tasks_per_skill: usize,
    /// Samples per task (`avg@k`, `pass@k`) and their temperature (0: greedy).
    pub samples: usize,
    pub temperature: f32,
    pub max_new_tokens: usize,
    /// Tasks whose prompt is longer are left out.
    pub max_prompt_tokens: usize,
    /// The RL-readiness probe: this many held-out prompts (spread over the skills), each
    /// sampled `group_size` times at `group_temperature`; reports the fraction of groups whose
    /// rewards are not all equal (`eval/frac_groups_mixed` = 1 - `frac_reward_zero_std`). 0: off.
    pub group_prompts: usize,
    pub group_size: usize,
    pub group_temperature: f32,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Gradings run at once (0: one per core).
    pub workers: usize,
}

impl Default for SftEval {
    fn default() -> Self {
        SftEval {
            every: 0,
            before_and_after: true,
            tasks: Vec::new(),
            tiers: Vec::new(),
            max_tasks_per_skill: 0,
            samples: 1,
            temperature: 0.0,
            max_new_tokens: 256,
            max_prompt_tokens: 1024,
            group_prompts: 0,
            group_size: 4,
            group_temperature: 1.0,
            max_batch: 16,
            workers: 0,
        }
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.data.train.is_empty() || !self.data.tasks.is_empty(), "data.train and data.tasks name no file");
        ensure!(self.data.max_tokens >= 2, "data.max_tokens must be at least 2");
        let t = &self.trainer;
        ensure!(t.batch_size >= 1 || t.batch_tokens > 0, "trainer.batch_size must be at least 1 (or set trainer.batch_tokens)");
        ensure!(t.max_steps > 0 || (t.epochs > 0.0 && t.epochs.is_finite()), "set trainer.max_steps or a positive trainer.epochs");
        ensure!(t.micro_batch_tokens >= 16, "trainer.micro_batch_tokens is too small");
        ensure!(self.eval.samples >= 1, "eval.samples must be at least 1");
        ensure!(self.eval.group_prompts == 0 || self.eval.group_size >= 2, "eval.group_size must be at least 2 for the group probe");
        Ok(())
    }
}
