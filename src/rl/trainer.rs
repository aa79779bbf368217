//! The trainer core: one optimizer step of the policy-gradient objective over micro-batches of
//! packed sequences, and saving/resuming the whole training state.
//!
//! [`Trainer::step_ce`] is the same step with masked next-token cross-entropy in place of the
//! policy objective (the supervised warm start, `crate::sft`).
//!
//! A step is, per micro-batch: forward (keeping activations or only layer inputs), the chunked
//! objective (giving `dL/d hidden` and the head's gradient), backward into the shared
//! gradients; then one AdamW step at the schedule's learning rate. The loss weights are
//! normalised over all micro-batches of the step, so splitting a batch changes nothing but
//! memory.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, LossGrads};
use crate::model::checkpoint::load_weights;
use crate::model::{param_infos, Model, ModelConfig, ParamInfo, Recompute, Weights};

use super::checkpoint::{self, Checkpoint, TrainerState};
use super::objective::{cross_entropy, loss_weights, next_tokens, policy_loss, LossAgg, LossStats, LossTotals, ObjectiveConfig, PolicyMetrics, PolicyRows};
use super::optimizer::{AdamWConfig, AdamWState, StepStats};
use super::schedule::LrSchedule;

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub objective: ObjectiveConfig,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    /// Which layers recompute their activations in the backward pass instead of keeping them
    /// (`"never"`, `"always"` or `{"layers": [...]}`).
    pub recompute: Recompute,
    pub seed: u64,
    /// Checkpoints kept in the run directory.
    pub keep_last: usize,
}

/// One micro-batch: packed sequences (`cu_seqlens` offsets into `tokens`) and, per row `r`
/// (which predicts `tokens[r+1]`), whether that target is a completion token.
#[derive(Clone, Debug, Default)]
pub struct MicroBatch {
    pub tokens: Vec<u32>,
    pub cu_seqlens: Vec<u32>,
    /// 1 on rows whose target is a completion token, else 0 (always 0 on a sequence's last row).
    pub mask: Vec<f32>,
    /// One advantage per sequence.
    pub advantages: Vec<f32>,
    /// Per-row log-probs of the policy the ratio is taken against; `None` takes the current
    /// weights', detached (on-policy: the ratio is 1).
    pub old_logp: Option<Vec<f32>>,
    pub ref_logp: Option<Vec<f32>>,
    /// Per-row log-probs reported by the rollout engine (truncated importance sampling).
    pub rollout_logp: Option<Vec<f32>>,
}

#[derive(Clone, Copy)]
enum Loss {
    Policy,
    CrossEntropy,
}

/// What one optimizer step reports.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub policy: PolicyMetrics,
    pub optimizer: StepStats,
}

pub use crate::rng::Rng;

pub struct Trainer<B: Backend> {
    pub model: Model<B>,
    pub opt: AdamWState<B>,
    pub cfg: TrainConfig,
    pub infos: Weights<ParamInfo>,
    pub step: u64,
    pub rng: Rng,
    pub data_position: u64,
    /// Per-step records kept in checkpoints (the caller decides what).
    pub history: serde_json::Value,
    /// Holds `config.json` and the tokenizer files copied into each checkpoint.
    pub source_dir: PathBuf,
    /// The gradients, kept from step to step and zeroed in place (fresh buffers of this size
    /// cost more in page faults on the CPU, and in allocations on CUDA, than zeroing).
    grads: Option<Weights<B::Tensor>>,
}

impl<B: Backend> Trainer<B> {
    /// A fresh trainer on `model`. Where the backend keeps master weights (CUDA), they are the
    /// model's compute copies widened to f32; [`Trainer::from_host`] takes them from the f32
    /// weights instead.
    pub fn new(be: &B, model: Model<B>, cfg: TrainConfig, source_dir: &Path) -> Result<Self> {
        Self::with_master(be, model, None, cfg, source_dir)
    }

    /// A fresh trainer on the model with parameters `host` (master weights, where kept, exactly
    /// these values).
    pub fn from_host(be: &B, config: ModelConfig, host: &Weights<Vec<f32>>, cfg: TrainConfig, source_dir: &Path) -> Result<Self> {
        let model = Model::from_host(be, config, host)?;
        Self::with_master(be, model, Some(host), cfg, source_dir)
    }

    fn with_master(be: &B, model: Model<B>, host: Option<&Weights<Vec<f32>>>, cfg: TrainConfig, source_dir: &Path) -> Result<Self> {
        cfg.objective.validate()?;
        let opt = AdamWState::new(be, &model.weights, host)?;
        let infos = param_infos(&model.config);
        Ok(Trainer { rng: Rng(cfg.seed), model, opt, cfg, infos, step: 0, data_position: 0, history: serde_json::Value::Null, source_dir: source_dir.to_path_buf(), grads: None })
    }

    /// One optimizer step of the policy-gradient objective over `batches`.
    pub fn step(&mut self, be: &B, batches: &[MicroBatch]) -> Result<StepReport> {
        self.run_step(be, batches, Loss::Policy)
    }

    /// One optimizer step of the mean next-token cross-entropy over the masked rows of
    /// `batches` (the supervised warm start; advantages and log-probs are ignored).
    pub fn step_ce(&mut self, be: &B, batches: &[MicroBatch]) -> Result<StepReport> {
        self.run_step(be, batches, Loss::CrossEntropy)
    }

    fn run_step(&mut self, be: &B, batches: &[MicroBatch], loss: Loss) -> Result<StepReport> {
        let c = self.model.config.clone();
        let obj = &self.cfg.objective.clone();
        let totals = LossTotals::of(batches.iter().map(|b| (&b.mask[..], &b.cu_seqlens[..])));
        ensure!(totals.tokens > 0, "the batch has no completion tokens");
        let recompute = self.cfg.recompute.clone();
        let mut grads = self.zeroed_grads(be)?;
        let mut stats = LossStats::default();
        for (i, b) in batches.iter().enumerate() {
            let t = b.tokens.len();
            let n_seqs = b.cu_seqlens.len().saturating_sub(1);
            ensure!(b.mask.len() == t, "micro-batch {i}: {} mask rows for {t} tokens", b.mask.len());
            let batch = self.model.pack(be, &b.tokens, &b.cu_seqlens)?;
            let fwd = self.model.forward_packed(be, batch, Some(&recompute)).with_context(|| format!("forward of micro-batch {i}"))?;
            let targets = next_tokens(&b.tokens, &b.cu_seqlens);
            let (d, v) = (c.hidden_size, c.vocab_size);
            let mut dh = be.zeros_f32(t * d)?;
            let grads_out = LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() };
            let head = self.model.weights.head();
            let (_, s) = match loss {
                Loss::Policy => {
                    ensure!(b.advantages.len() == n_seqs, "micro-batch {i}: {} advantages for {n_seqs} sequences", b.advantages.len());
                    let mut advantages = vec![0f32; t];
                    for (s, w) in b.cu_seqlens.windows(2).enumerate() {
                        advantages[w[0] as usize..w[1] as usize].fill(b.advantages[s]);
                    }
                    let rows = PolicyRows {
                        targets,
                        weights: loss_weights(&b.mask, &b.cu_seqlens, obj.loss_agg, &totals, obj.norm_len),
                        advantages,
                        old_logp: b.old_logp.clone(),
                        ref_logp: b.ref_logp.clone(),
                        rollout_logp: b.rollout_logp.clone(),
                    };
                    policy_loss(be, &fwd.hidden, head, d, v, &rows, obj, Some(grads_out))?
                }
                Loss::CrossEntropy => {
                    let weights = loss_weights(&b.mask, &b.cu_seqlens, LossAgg::TokenMean, &totals, None);
                    cross_entropy(be, &fwd.hidden, head, d, v, &targets, &weights, obj.chunk(v), Some(grads_out))?
                }
            };
            stats.combine(&s);
            self.model.backward(be, &fwd, &dh, &mut grads).with_context(|| format!("backward of micro-batch {i}"))?;
        }
        self.apply(be, grads, stats)
    }

    /// The gradient buffers of the last step zeroed in place, or fresh ones.
    fn zeroed_grads(&mut self, be: &B) -> Result<Weights<B::Tensor>> {
        match self.grads.take() {
            Some(mut g) => {
                for t in g.visit_mut() {
                    be.fill(t, 0.0)?;
                }
                Ok(g)
            }
            None => self.model.zero_grads(be),
        }
    }

    /// The AdamW step at the schedule's learning rate, closing a step.
    fn apply(&mut self, be: &B, grads: Weights<B::Tensor>, stats: LossStats) -> Result<StepReport> {
        let lr = self.cfg.schedule.lr_at(self.opt.step + 1);
        let opt = self.opt.step(be, &self.cfg.optimizer, &self.infos, &mut self.model.weights, &grads, lr);
        // Kept even when the update is refused, for inspection and reuse.
        self.grads = Some(grads);
        let opt = opt?;
        self.step += 1;
        Ok(StepReport { policy: stats.metrics(), optimizer: opt })
    }

    /// The gradients of the last step (before clipping), once a step has run.
    pub fn grads(&self) -> Option<&Weights<B::Tensor>> {
        self.grads.as_ref()
    }

    /// The trainable parameters as host f32: the master copies where the optimizer keeps them
    /// (CUDA), else the model's weights.
    pub fn host_weights(&self, be: &B) -> Result<Weights<Vec<f32>>> {
        match &self.opt.master {
            Some(m) => m.try_map(|t| be.to_f32(t)),
            None => self.model.to_host(be),
        }
    }

    /// Writes checkpoint `step_<step>` into `run_dir` (the weights from [`Trainer::host_weights`],
    /// in f32). Later checkpoints copy `config.json` and the tokenizer files from this one (older
    /// ones may be pruned).
    pub fn save(&mut self, be: &B, run_dir: &Path) -> Result<PathBuf> {
        let weights = self.host_weights(be)?;
        let optimizer = self.opt.to_host(be, &self.infos)?;
        let state = TrainerState { step: self.step, rng: self.rng.0, data_position: self.data_position, config: serde_json::to_value(&self.cfg)?, history: self.history.clone() };
        let ckpt = Checkpoint { config: &self.model.config, weights: &weights, source_dir: &self.source_dir, optimizer: &optimizer, state: &state };
        let dir = checkpoint::save(run_dir, &ckpt, self.cfg.keep_last.max(1))?;
        self.source_dir = dir.clone();
        Ok(dir)
    }

    /// The run's trainer: with `resume`, the newest usable checkpoint in `run_dir` (rejected
    /// newer ones are reported), taking `cfg` as the configuration from now on; otherwise, or
    /// when there is nothing to resume, a fresh trainer on the model at `model_path`.
    pub fn resume_or_new(be: &B, run_dir: &Path, resume: bool, model_path: &Path, cfg: TrainConfig) -> Result<Self> {
        if resume {
            if let Some((mut trainer, rejected)) = Self::resume(be, run_dir)? {
                for r in rejected {
                    eprintln!("note: skipped checkpoint: {r}");
                }
                trainer.cfg = cfg;
                // A run may make several optimizer updates per step; it records their count.
                if let Some(s) = trainer.history.get("optimizer_step").and_then(|v| v.as_u64()) {
                    trainer.opt.step = s;
                }
                eprintln!("resuming from step {}", trainer.step);
                return Ok(trainer);
            }
            eprintln!("note: nothing to resume in {}; starting a new run", run_dir.display());
        }
        let load = || -> Result<_> {
            let config = ModelConfig::from_file(&model_path.join("config.json"))?;
            let host = load_weights(model_path, &config)?;
            Ok((config, host))
        };
        let (config, host) = load().with_context(|| format!("loading {}", model_path.display()))?;
        let mut trainer = Self::from_host(be, config, &host, cfg, model_path)?;
        trainer.history = serde_json::json!({});
        Ok(trainer)
    }

    /// Continues from the newest usable checkpoint in `run_dir` (see [`checkpoint::load_latest`]);
    /// `None` when there is none. The run configuration comes from the checkpoint; rejected
    /// newer checkpoints are returned with the trainer.
    pub fn resume(be: &B, run_dir: &Path) -> Result<Option<(Self, Vec<String>)>> {
        let Some(l) = checkpoint::load_latest(run_dir)? else { return Ok(None) };
        let cfg: TrainConfig = serde_json::from_value(l.state.config.clone()).with_context(|| format!("run config in {}", l.dir.display()))?;
        let model = Model::from_host(be, l.config.clone(), &l.weights)?;
        let infos = param_infos(&model.config);
        let opt = AdamWState::from_host(be, &infos, &l.optimizer, l.state.step, &model.weights, &l.weights)?;
        let trainer = Trainer { model, opt, cfg, infos, step: l.state.step, rng: Rng(l.state.rng), data_position: l.state.data_position, history: l.state.history, source_dir: l.dir.clone(), grads: None };
        Ok(Some((trainer, l.rejected)))
    }
}
