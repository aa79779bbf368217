//! A training run: the run directory, resume, the step loop, evaluation, checkpoints, metrics
//! and the before/after table. `rl::step` is one step; this module is everything around it.
//!
//! The run's own counters travel in the checkpoint's `history`: the RL step (the checkpoint's
//! `step`), the optimizer's update count (it differs when a step makes several updates or skips
//! one), and the evaluation before the first step, so a resumed run prints the same table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::backend::Backend;
use crate::metrics::{Metrics, MetricsLog, Progress};
use crate::model::Model;
use crate::rollout::SamplingConfig;
use crate::skills::{Grader, GraderConfig, Skill};
use crate::tokenizer::Tokenizer;

use super::checkpoint::LATEST;
use super::environment::Environment;
use super::eval::{evaluate, pick_per_skill, EvalOptions, EvalReport};
use super::run_config::{RolloutMode, RunConfig};
use super::step::{step, StepContext};
use super::tasks::prompt_fn;
use super::tasks::TaskPool;
use super::trainer::{TrainConfig, Trainer};

/// Where and how to run.
pub struct RunOptions {
    pub output: PathBuf,
    /// Continue from the run directory's `latest` checkpoint.
    pub resume: bool,
}

fn train_config(cfg: &RunConfig) -> TrainConfig {
    TrainConfig {
        objective: cfg.objective.clone(),
        optimizer: cfg.optimizer.clone(),
        schedule: cfg.schedule.clone(),
        recompute: cfg.trainer.recompute.clone(),
        seed: cfg.trainer.seed,
        keep_last: cfg.checkpoint.keep_last,
    }
}

/// Trains according to `cfg` on backend `be`, graded by the skills' sandboxed grader.
pub fn train<B: Backend>(be: &B, cfg: &RunConfig, opts: &RunOptions) -> Result<()> {
    cfg.validate()?;
    check_run_dir(&opts.output, opts.resume)?;
    let workers = if cfg.grading.workers == 0 { GraderConfig::default().workers } else { cfg.grading.workers };
    let grader = Grader::new(GraderConfig { workers, ..GraderConfig::default() })?;
    train_with(be, cfg, opts, &grader)
}

/// Files and directories whose presence means a run directory already holds a run.
fn run_marks(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut marks: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == LATEST || n == "metrics.jsonl" || n.starts_with("step_") || n.starts_with(".step_"))
        .collect();
    marks.sort();
    marks
}

/// A fresh run needs a run directory that holds no run; a resumed one needs a directory.
fn check_run_dir(out: &Path, resume: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--output {} is not a directory", out.display());
    }
    let marks = run_marks(out);
    if !resume && !marks.is_empty() {
        bail!("{} already holds a run ({}); pass --resume to continue it or choose another --output", out.display(), marks.join(", "));
    }
    Ok(())
}

/// Top-level `section.key` values that differ between two configs, as `key: old -> new`.
fn config_changes(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    let flat = |t: &toml::Table| -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        for (section, v) in t {
            match v.as_table() {
                Some(inner) => m.extend(inner.iter().map(|(k, v)| (format!("{section}.{k}"), v.to_string()))),
                None => {
                    m.insert(section.clone(), v.to_string());
                }
            }
        }
        m
    };
    let (a, b) = (flat(old), flat(new));
    for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let (x, y) = (a.get(key).map_or("(unset)", String::as_str), b.get(key).map_or("(unset)", String::as_str));
        if x != y {
            out.push(format!("{key}: {x} -> {y}"));
        }
    }
    out
}

/// Trains according to `cfg` on backend `be` with rewards from `env`.
pub fn train_with<B: Backend>(be: &B, cfg: &RunConfig, opts: &RunOptions, env: &dyn Environment) -> Result<()> {
    cfg.validate()?;
    let out = &opts.output;
    check_run_dir(out, opts.resume)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_config(out, cfg, opts.resume)?;

    let tokenizer = Tokenizer::from_dir(&cfg.model.path).with_context(|| format!("loading the tokenizer of {}", cfg.model.path.display()))?;
    let load = |files: &[std::path::PathBuf]| {
        TaskPool::load(files, cfg.data.bad_lines, &cfg.data.tiers, |s: Skill| cfg.data.weight(s), &tokenizer, cfg.rollout.max_prompt_tokens, prompt_fn(cfg.rollout.mode))
    };
    let pool = load(&cfg.data.train)?;
    let eval_pool = if cfg.data.eval.is_empty() { None } else { Some(load(&cfg.data.eval)?) };
    for note in pool.notes.iter().chain(eval_pool.iter().flat_map(|p| &p.notes)) {
        eprintln!("note: {note}");
    }
    let all: Vec<crate::skills::Task> = pool.tasks.iter().chain(eval_pool.iter().flat_map(|p| &p.tasks)).map(|t| t.task.clone()).collect();
    env.prepare(&all)?;

    let mut trainer = start(be, cfg, opts)?;
    let first = trainer.step + 1;
    if first > cfg.trainer.max_steps {
        eprintln!("note: the run in {} is at step {}, which reaches trainer.max_steps = {}: nothing to do (raise trainer.max_steps to go on)", out.display(), trainer.step, cfg.trainer.max_steps);
        return Ok(());
    }
    let reference = if cfg.objective.kl_coef > 0.0 { Some(Model::load(be, &cfg.model.path)?) } else { None };
    let mut log = MetricsLog::open(out, Some(trainer.step))?;
    let counts: Vec<String> = pool.skills().iter().map(|(s, n)| format!("{} {n}", s.name())).collect();
    eprintln!("training {} on {} tasks ({}), steps {first}..={}, run directory {}", cfg.model.path.display(), pool.tasks.len(), counts.join(", "), cfg.trainer.max_steps, out.display());

    let eval_tasks = eval_pool.as_ref().map(|p| pick_per_skill(&p.tasks, cfg.eval.max_tasks_per_skill)).unwrap_or_default();
    let run_eval = |model: &Model<B>| -> Result<Option<EvalReport>> {
        if eval_tasks.is_empty() {
            return Ok(None);
        }
        let sampling = SamplingConfig { temperature: cfg.eval.temperature, seed: cfg.trainer.seed, max_new_tokens: cfg.rollout.max_response_tokens, ..SamplingConfig::default() };
        let agent = (cfg.rollout.mode == RolloutMode::Agent).then_some(&cfg.agent);
        let opts = EvalOptions { samples: cfg.eval.samples, sampling, max_batch: cfg.rollout.max_batch, agent };
        Ok(Some(evaluate(be, model, &tokenizer, env, &eval_tasks, &opts)?.0))
    };
    let mut before: Option<EvalReport> = trainer.history.get("eval_before").and_then(|v| serde_json::from_value(v.clone()).ok());
    if cfg.eval.before_and_after && first == 1 {
        eprintln!("evaluating before training on {} held-out tasks", eval_tasks.len());
        before = run_eval(&trainer.model)?;
        if let Some(b) = &before {
            trainer.history["eval_before"] = serde_json::to_value(b)?;
        }
    }

    let ctx = StepContext { be, cfg, tokenizer: &tokenizer, env, pool: &pool, reference: reference.as_ref() };
    let progress = Progress::new("train", trainer.step, cfg.trainer.max_steps);
    let mut last_eval = None;
    for n in first..=cfg.trainer.max_steps {
        let mut m = step(&ctx, &mut trainer).with_context(|| format!("step {n}"))?;
        // The trainer counts optimizer updates; the run counts steps.
        trainer.history["optimizer_step"] = json!(trainer.opt.step);
        trainer.step = n;
        let eval_now = cfg.eval.every > 0 && n % cfg.eval.every == 0 && n != cfg.trainer.max_steps;
        if eval_now || (n == cfg.trainer.max_steps && (cfg.eval.before_and_after || cfg.eval.every > 0)) {
            if let Some(r) = run_eval(&trainer.model)? {
                m.extend(r.metrics());
                last_eval = Some(r);
            }
        }
        log.append(n, &m)?;
        progress.step(n, &summary(&m));
        if (cfg.checkpoint.every > 0 && n % cfg.checkpoint.every == 0) || n == cfg.trainer.max_steps {
            trainer.save(be, out)?;
        }
    }
    progress.finish();
    if let (Some(b), Some(a)) = (&before, &last_eval) {
        println!("{}", before_after_table(b, a));
    }
    match crate::metrics::report::render(out) {
        Ok(plots) => eprintln!("plots: {}", plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
        Err(e) => eprintln!("note: no plots: {e:#}"),
    }
    Ok(())
}

/// Writes the resolved config into the run directory; on resume, first notes what changed.
fn write_config(out: &std::path::Path, cfg: &RunConfig, resume: bool) -> Result<()> {
    let config_path = out.join("config.toml");
    let new_config = toml::Table::try_from(cfg)?;
    if resume {
        if let Some(old) = std::fs::read_to_string(&config_path).ok().and_then(|t| t.parse::<toml::Table>().ok()) {
            for change in config_changes(&old, &new_config) {
                eprintln!("note: resuming with a changed config: {change}");
            }
        }
    }
    std::fs::write(&config_path, toml::to_string(&new_config)?).context("writing the resolved config")
}

/// A fresh trainer on the configured model, or the run directory's latest checkpoint.
fn start<B: Backend>(be: &B, cfg: &RunConfig, opts: &RunOptions) -> Result<Trainer<B>> {
    Trainer::resume_or_new(be, &opts.output, opts.resume, &cfg.model.path, train_config(cfg))
}

fn summary(m: &Metrics) -> String {
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    // A step whose groups all had equal rewards makes no update, so it has no KL to show.
    let kl = m.get("kl").map_or_else(|| "-".to_string(), |kl| format!("{kl:.4}"));
    format!("reward {:.3} kl {kl} len {:.0} {:.1}s", get("reward/mean"), get("response_length/mean"), get("timing/step"))
}

/// Per-skill held-out scores before and after training.
pub fn before_after_table(before: &EvalReport, after: &EvalReport) -> String {
    let k = after.k;
    let mut s = format!("{:<10} {:>6} {:>12} {:>12}\n", "skill", "tasks", format!("before@{k}"), format!("after@{k}"));
    for (skill, a) in &after.skills {
        let b = before.skills.get(skill).map_or(f64::NAN, |b| b.avg_at_k);
        s.push_str(&format!("{:<10} {:>6} {:>12.3} {:>12.3}\n", skill.name(), a.tasks, b, a.avg_at_k));
    }
    s
}

/// Reads a run config file with overrides (for the CLI and tests).
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<RunConfig> {
    crate::config::load(path, overrides)
}
