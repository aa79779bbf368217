//! The run configuration of `atomrl train` (and the shared sections of `atomrl sft`): one TOML
//! file with a section per stage, every field documented and defaulted, unknown keys refused.
//! `configs/demo.toml` is the embedded default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::agent::AgentConfig;
use crate::model::Recompute;
use crate::skills::{BadLine, Skill, Tier};

use super::advantages::AdvantageConfig;
use super::objective::ObjectiveConfig;
use super::optimizer::AdamWConfig;
use super::schedule::LrSchedule;

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub rollout: RolloutSection,
    pub objective: ObjectiveConfig,
    pub advantages: AdvantageConfig,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub trainer: TrainerSection,
    pub eval: EvalSection,
    pub checkpoint: CheckpointSection,
    pub grading: GradingSection,
    /// Budgets and tools of agent episodes (`rollout.mode = "agent"`).
    pub agent: AgentConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json).
    pub path: PathBuf,
    /// `cpu`, `cuda` or `auto`. Generation takes CUDA when a GPU and this build's kernels are
    /// present; training takes it only with `cuda`, since the CUDA training step is compiled
    /// but has not run on a GPU yet (docs/kernels.md).
    pub device: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { path: PathBuf::from(".cache/smollm2/hf"), device: "auto".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Task files (JSONL) to train on.
    pub train: Vec<PathBuf>,
    /// Held-out task files for evaluation.
    pub eval: Vec<PathBuf>,
    /// The joint mixture: relative weight of each skill when sampling prompts. A skill not
    /// listed gets weight 1 (uniform by default); weight 0 leaves it out.
    pub skill_weights: BTreeMap<Skill, f32>,
    /// Keep only tasks of these tiers (`easy`, `normal`); empty keeps all.
    pub tiers: Vec<Tier>,
    /// A malformed task line: `skip` it (reported) or `refuse` the file.
    pub bad_lines: BadLine,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection { train: Vec::new(), eval: Vec::new(), skill_weights: BTreeMap::new(), tiers: Vec::new(), bad_lines: BadLine::Skip }
    }
}

impl DataSection {
    pub fn weight(&self, skill: Skill) -> f32 {
        self.skill_weights.get(&skill).copied().unwrap_or(1.0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSection {
    /// `single`: one completion answers the task; `agent`: a multi-turn episode with tools in
    /// the task's sandboxed repository (see `[agent]`).
    pub mode: RolloutMode,
    /// Completions sampled per prompt (the GRPO group).
    pub group_size: usize,
    /// Prompts per step (per sampling round).
    pub prompts_per_step: usize,
    /// Dynamic sampling: while fewer than `min_informative_groups` groups have rewards that
    /// differ (the only groups with a gradient), sample another `prompts_per_step` prompts, up
    /// to this many rounds per step. 1 samples once.
    pub max_sampling_rounds: usize,
    /// Groups with differing rewards wanted before sampling stops (0: `prompts_per_step`).
    pub min_informative_groups: usize,
    /// Tasks whose prompt is longer are left out of the run (reported at start).
    pub max_prompt_tokens: usize,
    pub max_response_tokens: usize,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Leave completions cut at `max_response_tokens` (agent episodes ended by a budget) out
    /// of the loss.
    pub mask_truncated: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutMode {
    #[default]
    Single,
    Agent,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            mode: RolloutMode::Single,
            group_size: 8,
            prompts_per_step: 8,
            max_sampling_rounds: 1,
            min_informative_groups: 0,
            max_prompt_tokens: 1024,
            max_response_tokens: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            max_batch: 64,
            mask_truncated: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerSection {
    /// Steps of the run (each: rollout, grade, advantages, updates).
    pub max_steps: u64,
    pub seed: u64,
    /// Optimisation passes over each step's rollouts.
    pub epochs: usize,
    /// Optimizer steps per pass (the rollouts are split into this many mini-batches).
    pub mini_batches: usize,
    /// Most tokens in one micro-batch (gradient accumulation splits a mini-batch by this).
    pub micro_batch_tokens: usize,
    /// Recompute activations in the backward pass instead of keeping them: `never`, `always`,
    /// or `{ layers = [0, 1, ...] }`.
    pub recompute: Recompute,
}

impl Default for TrainerSection {
    fn default() -> Self {
        TrainerSection { max_steps: 100, seed: 0, epochs: 1, mini_batches: 1, micro_batch_tokens: 8192, recompute: Recompute::Never }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate every this many steps (0: only before and after the run).
    pub every: u64,
    /// Samples per task (`avg@k`, `pass@k`).
    pub samples: usize,
    /// 0 decodes greedily.
    pub temperature: f32,
    /// At most this many held-out tasks per skill (0: all).
    pub max_tasks_per_skill: usize,
    /// Evaluate before the first step and after the last.
    pub before_and_after: bool,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { every: 0, samples: 1, temperature: 0.0, max_tasks_per_skill: 0, before_and_after: true }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSection {
    /// Save every this many steps, and always after the last (0: only after the last).
    pub every: u64,
    /// Checkpoints kept in the run directory.
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every: 10, keep_last: 2 }
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradingSection {
    /// Gradings run at once (0: one per core).
    pub workers: usize,
}

impl RunConfig {
    pub fn validate(&self) -> Result<()> {
        let r = &self.rollout;
        ensure!(r.group_size >= 1 && r.prompts_per_step >= 1, "rollout.group_size and rollout.prompts_per_step must be at least 1");
        ensure!(r.max_sampling_rounds >= 1, "rollout.max_sampling_rounds must be at least 1");
        ensure!(
            r.min_informative_groups <= r.max_sampling_rounds * r.prompts_per_step,
            "rollout.min_informative_groups ({}) is more groups than rollout.max_sampling_rounds × rollout.prompts_per_step ({}) can sample",
            r.min_informative_groups,
            r.max_sampling_rounds * r.prompts_per_step
        );
        ensure!(r.max_response_tokens >= 1, "rollout.max_response_tokens must be at least 1");
        ensure!(
            (self.objective.temperature - r.temperature).abs() < 1e-6 || r.temperature == 0.0,
            "objective.temperature ({}) must equal rollout.temperature ({}): the objective scores the tokens under the distribution they were sampled from",
            self.objective.temperature,
            r.temperature
        );
        ensure!(r.temperature > 0.0 && r.temperature.is_finite(), "rollout.temperature must be > 0 for RL (greedy samples of a group are identical)");
        ensure!(r.top_p > 0.0 && r.top_p <= 1.0, "rollout.top_p must be in (0, 1], got {}", r.top_p);
        ensure!((0.0..1.0).contains(&r.min_p), "rollout.min_p must be in [0, 1), got {}", r.min_p);
        ensure!(r.max_batch >= 1, "rollout.max_batch must be at least 1");
        ensure!(r.max_prompt_tokens >= 1, "rollout.max_prompt_tokens must be at least 1");
        ensure!(["cpu", "cuda", "auto"].contains(&self.model.device.to_ascii_lowercase().as_str()), "model.device must be cpu, cuda or auto, got {:?}", self.model.device);
        ensure!(self.trainer.max_steps >= 1, "trainer.max_steps must be at least 1");
        ensure!(self.checkpoint.keep_last >= 1, "checkpoint.keep_last must be at least 1 (resuming needs a checkpoint)");
        ensure!(self.eval.temperature >= 0.0 && self.eval.temperature.is_finite(), "eval.temperature must be >= 0, got {}", self.eval.temperature);
        ensure!(self.trainer.epochs >= 1 && self.trainer.mini_batches >= 1, "trainer.epochs and trainer.mini_batches must be at least 1");
        ensure!(self.trainer.micro_batch_tokens >= 16, "trainer.micro_batch_tokens is too small");
        ensure!(!self.data.train.is_empty(), "data.train names no task file");
        ensure!(self.data.skill_weights.values().all(|w| *w >= 0.0 && w.is_finite()), "data.skill_weights must be finite and >= 0");
        ensure!(Skill::ALL.iter().any(|s| self.data.weight(*s) > 0.0), "data.skill_weights leave out every skill");
        ensure!(self.eval.samples >= 1, "eval.samples must be at least 1");
        self.agent.validate()?;
        self.objective.validate()
    }
}
