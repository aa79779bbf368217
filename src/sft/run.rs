//! An SFT run: examples tokenized once, a seeded order over them, and the step loop with
//! checkpoints, metrics, evaluation and resume — the same run directory as `atomrl train`.
//!
//! The examples form one endless stream: epoch `e` is a permutation of all examples drawn from
//! the seed and `e` alone, and a step takes the next examples of the stream (`batch_size` of
//! them, or up to `batch_tokens` tokens). The trainer's `data_position` is the stream position,
//! saved in every checkpoint, so a resumed run reads exactly the examples an uninterrupted one
//! would. Each step's examples are packed whole into micro-batches (`cu_seqlens`: attention never
//! crosses an example boundary) and the loss is the mean over the step's assistant tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::backend::Backend;
use crate::metrics::{Metrics, MetricsLog, Progress};
use crate::model::Model;
use crate::rl::checkpoint::LATEST;
use crate::rl::eval::{evaluate, pick_per_skill, EvalOptions, EvalReport};
use crate::rl::objective::{cross_entropy, default_chunk, next_tokens};
use crate::rl::optimizer::NonFiniteGradient;
use crate::rl::tasks::{prompt_ids, PromptedTask};
use crate::rl::trainer::{MicroBatch, Rng, TrainConfig, Trainer};
use crate::rollout::SamplingConfig;
use crate::skills::{load_tasks, BadLine, Grader, GraderConfig, Skill, Task};
use crate::tokenizer::Tokenizer;

use super::config::SftConfig;
use super::data::{from_task, load_examples, tokenize, Example, Tokenized};

/// Where and how to run.
pub struct SftOptions {
    pub output: PathBuf,
    /// Continue from the run directory's `latest` checkpoint.
    pub resume: bool,
    /// Stop after this step without the final checkpoint, as if killed (for tests).
    pub stop_after: Option<u64>,
}

/// What a finished run reports.
pub struct SftOutcome {
    /// The last checkpoint: a Hugging Face model directory `atomrl train` loads with
    /// `model.path=...`.
    pub final_dir: Option<PathBuf>,
    pub before: Option<Metrics>,
    pub after: Option<Metrics>,
}

/// The order of examples: epoch `e` is a permutation drawn from `(seed, e)`.
pub struct ExampleStream {
    n: usize,
    seed: u64,
    /// The permutation of the last epoch asked for.
    cache: Option<(u64, Vec<usize>)>,
}

impl ExampleStream {
    pub fn new(n: usize, seed: u64) -> Self {
        ExampleStream { n, seed, cache: None }
    }

    /// The example at stream position `pos`.
    pub fn at(&mut self, pos: u64) -> usize {
        let (epoch, i) = (pos / self.n as u64, (pos % self.n as u64) as usize);
        if self.cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = Rng(self.seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
            let mut p: Vec<usize> = (0..self.n).collect();
            rng.shuffle(&mut p);
            self.cache = Some((epoch, p));
        }
        self.cache.as_ref().expect("just filled").1[i]
    }

    /// The examples of the step starting at `pos` (see the module header).
    pub fn take(&mut self, pos: u64, lens: &[usize], batch_size: usize, batch_tokens: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut tokens = 0;
        let mut p = pos;
        loop {
            let e = self.at(p);
            if batch_tokens > 0 {
                if !out.is_empty() && tokens + lens[e] > batch_tokens {
                    break;
                }
            } else if out.len() == batch_size {
                break;
            }
            tokens += lens[e];
            out.push(e);
            p += 1;
        }
        out
    }
}

/// Packs whole examples into micro-batches of at most `max_tokens` tokens (a longer example goes
/// alone), in order.
pub fn pack(examples: &[&Tokenized], max_tokens: usize) -> Vec<MicroBatch> {
    let mut out = Vec::new();
    let mut cur = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
    for ex in examples {
        if cur.cu_seqlens.len() > 1 && cur.tokens.len() + ex.tokens.len() > max_tokens {
            out.push(std::mem::replace(&mut cur, MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() }));
        }
        cur.tokens.extend(&ex.tokens);
        cur.mask.extend(ex.row_mask());
        cur.cu_seqlens.push(cur.tokens.len() as u32);
        cur.advantages.push(0.0);
    }
    if cur.cu_seqlens.len() > 1 {
        out.push(cur);
    }
    out
}

/// Steps of the run: `max_steps`, or as many as `epochs` passes over the stream take.
pub fn planned_steps(cfg: &SftConfig, lens: &[usize]) -> u64 {
    let t = &cfg.trainer;
    if t.max_steps > 0 {
        return t.max_steps;
    }
    let end = (t.epochs * lens.len() as f64).ceil() as u64;
    let mut stream = ExampleStream::new(lens.len(), t.seed);
    let (mut pos, mut steps) = (0u64, 0u64);
    while pos < end {
        pos += stream.take(pos, lens, t.batch_size, t.batch_tokens).len() as u64;
        steps += 1;
    }
    steps
}

/// Examples of `files` and of the tasks in `task_files`, tokenized; those longer than
/// `max_tokens` or without an assistant token are left out and counted in `notes`.
pub fn load_tokenized(tokenizer: &Tokenizer, files: &[PathBuf], task_files: &[PathBuf], tiers: &[crate::skills::Tier], max_tokens: usize, notes: &mut Vec<String>) -> Result<Vec<Tokenized>> {
    let mut examples: Vec<Example> = Vec::new();
    for f in files {
        examples.extend(load_examples(f)?);
    }
    for f in task_files {
        let (tasks, errors) = load_tasks(f, BadLine::Skip)?;
        for e in &errors {
            notes.push(format!("{}: skipped {e}", f.display()));
        }
        for t in tasks.iter().filter(|t| tiers.is_empty() || tiers.contains(&t.tier)) {
            examples.push(from_task(t).with_context(|| format!("converting {}", f.display()))?);
        }
    }
    let (mut too_long, mut empty) = (0, 0);
    let mut out = Vec::new();
    for (i, ex) in examples.iter().enumerate() {
        let name = ex.id.clone().unwrap_or_else(|| format!("example {}", i + 1));
        let t = tokenize(tokenizer, &ex.messages).with_context(|| format!("tokenizing {name}"))?;
        if t.tokens.len() > max_tokens {
            too_long += 1;
        } else if t.assistant_tokens() == 0 {
            empty += 1;
        } else {
            out.push(t);
        }
    }
    if too_long > 0 {
        notes.push(format!("left out {too_long} examples longer than {max_tokens} tokens"));
    }
    if empty > 0 {
        notes.push(format!("left out {empty} examples without an assistant turn"));
    }
    Ok(out)
}

fn train_config(cfg: &SftConfig) -> TrainConfig {
    TrainConfig {
        optimizer: cfg.optimizer.clone(),
        schedule: cfg.schedule.clone(),
        recompute: cfg.trainer.recompute.clone(),
        seed: cfg.trainer.seed,
        keep_last: cfg.checkpoint.keep_last,
        ..TrainConfig::default()
    }
}

/// Held-out evaluation: the loss on held-out examples and the graded answers on held-out tasks.
struct Evaluator<'a> {
    cfg: &'a SftConfig,
    tokenizer: &'a Tokenizer,
    examples: Vec<Tokenized>,
    tasks: Vec<PromptedTask>,
    grader: Option<Grader>,
}

impl Evaluator<'_> {
    fn is_empty(&self) -> bool {
        self.examples.is_empty() && self.tasks.is_empty()
    }

    fn run<B: Backend>(&self, be: &B, model: &Model<B>) -> Result<Metrics> {
        let mut m = Metrics::new();
        if !self.examples.is_empty() {
            m.insert("eval/loss".into(), eval_loss(be, model, &self.examples, self.cfg.trainer.micro_batch_tokens)? as f64);
        }
        let Some(grader) = &self.grader else { return Ok(m) };
        let e = &self.cfg.eval;
        let picked = pick_per_skill(&self.tasks, e.max_tasks_per_skill);
        let sampling = SamplingConfig { temperature: e.temperature, seed: self.cfg.trainer.seed, max_new_tokens: e.max_new_tokens, ..SamplingConfig::default() };
        let (report, _) = evaluate(be, model, self.tokenizer, grader, &picked, &EvalOptions { samples: e.samples, sampling, max_batch: e.max_batch, agent: None })?;
        m.extend(report.metrics());
        m.insert("eval/reward/mean".into(), mean_reward(&report));
        if e.group_prompts > 0 {
            let probe = round_robin(&self.tasks, e.group_prompts);
            let sampling = SamplingConfig { temperature: e.group_temperature, seed: self.cfg.trainer.seed ^ 0x5eed, max_new_tokens: e.max_new_tokens, ..SamplingConfig::default() };
            let (_, samples) = evaluate(be, model, self.tokenizer, grader, &probe, &EvalOptions { samples: e.group_size, sampling, max_batch: e.max_batch, agent: None })?;
            let groups: Vec<&[crate::rl::eval::EvalSample]> = samples.chunks(e.group_size).collect();
            let mixed = groups.iter().filter(|g| g.iter().any(|s| s.reward != g[0].reward)).count();
            m.insert("eval/frac_groups_mixed".into(), mixed as f64 / groups.len().max(1) as f64);
            m.insert("eval/group_reward/mean".into(), samples.iter().map(|s| s.reward as f64).sum::<f64>() / samples.len().max(1) as f64);
        }
        Ok(m)
    }
}

fn mean_reward(r: &EvalReport) -> f64 {
    let (s, n) = r.skills.values().fold((0.0, 0usize), |(s, n), x| (s + x.avg_at_k * x.tasks as f64, n + x.tasks));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// `n` tasks taken in turn from each skill, in file order.
fn round_robin(tasks: &[PromptedTask], n: usize) -> Vec<&PromptedTask> {
    let mut by_skill: BTreeMap<Skill, Vec<&PromptedTask>> = BTreeMap::new();
    for t in tasks {
        by_skill.entry(t.task.skill).or_default().push(t);
    }
    let mut out = Vec::new();
    for round in 0.. {
        let before = out.len();
        for list in by_skill.values() {
            if out.len() < n {
                if let Some(t) = list.get(round) {
                    out.push(*t);
                }
            }
        }
        if out.len() == n || out.len() == before {
            break;
        }
    }
    out
}

/// Mean cross-entropy over the assistant tokens of `examples` (no gradients).
pub fn eval_loss<B: Backend>(be: &B, model: &Model<B>, examples: &[Tokenized], micro_batch_tokens: usize) -> Result<f32> {
    let refs: Vec<&Tokenized> = examples.iter().collect();
    let c = &model.config;
    let (mut sum, mut n) = (0f64, 0usize);
    for b in pack(&refs, micro_batch_tokens) {
        let fwd = model.forward_packed(be, model.pack(be, &b.tokens, &b.cu_seqlens)?, None)?;
        let targets = next_tokens(&b.tokens, &b.cu_seqlens);
        let (logp, _) = cross_entropy(be, &fwd.hidden, model.weights.head(), c.hidden_size, c.vocab_size, &targets, &b.mask, default_chunk(c.vocab_size), None)?;
        for (lp, m) in logp.iter().zip(&b.mask) {
            if *m != 0.0 {
                sum -= *lp as f64;
                n += 1;
            }
        }
    }
    Ok((sum / n.max(1) as f64) as f32)
}

/// Runs supervised fine-tuning according to `cfg` on backend `be`.
pub fn sft<B: Backend>(be: &B, cfg: &SftConfig, opts: &SftOptions) -> Result<SftOutcome> {
    cfg.validate()?;
    let out = &opts.output;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if !opts.resume && out.join(LATEST).exists() {
        bail!("{} already holds a run; pass --resume to continue it or choose another --output", out.display());
    }
    std::fs::write(out.join("config.toml"), toml::to_string(cfg)?).context("writing the resolved config")?;

    let tokenizer = Tokenizer::from_dir(&cfg.model.path).with_context(|| format!("loading the tokenizer of {}", cfg.model.path.display()))?;
    let mut notes = Vec::new();
    let examples = load_tokenized(&tokenizer, &cfg.data.train, &cfg.data.tasks, &cfg.data.tiers, cfg.data.max_tokens, &mut notes)?;
    if examples.is_empty() {
        bail!("no usable training example (after the length filter)");
    }
    let evaluator = evaluator(cfg, &tokenizer, &mut notes)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    let lens: Vec<usize> = examples.iter().map(|e| e.tokens.len()).collect();
    let total = planned_steps(cfg, &lens);

    let mut trainer = start(be, cfg, opts)?;
    let first = trainer.step + 1;
    let mut log = MetricsLog::open(out, Some(trainer.step))?;
    let assistant: usize = examples.iter().map(|e| e.assistant_tokens()).sum();
    eprintln!(
        "fine-tuning {} on {} examples ({} tokens, {} of them assistant), steps {first}..={total}, run directory {}",
        cfg.model.path.display(),
        examples.len(),
        lens.iter().sum::<usize>(),
        assistant,
        out.display()
    );

    let mut before: Option<Metrics> = trainer.history.get("eval_before").and_then(|v| serde_json::from_value(v.clone()).ok());
    if cfg.eval.before_and_after && first == 1 && !evaluator.is_empty() {
        eprintln!("evaluating before training");
        let m = evaluator.run(be, &trainer.model)?;
        trainer.history["eval_before"] = serde_json::to_value(&m)?;
        log.append(0, &m)?;
        before = Some(m);
    }

    let mut stream = ExampleStream::new(examples.len(), cfg.trainer.seed);
    let progress = Progress::new("sft", trainer.step, total);
    let mut after = None;
    let mut skipped = trainer.history.get("skipped_updates").and_then(|v| v.as_u64()).unwrap_or(0);
    for n in first..=total {
        let picks = stream.take(trainer.data_position, &lens, cfg.trainer.batch_size, cfg.trainer.batch_tokens);
        let chosen: Vec<&Tokenized> = picks.iter().map(|&i| &examples[i]).collect();
        let mut m = train_step(be, &mut trainer, &chosen, cfg.trainer.micro_batch_tokens, &mut skipped).with_context(|| format!("step {n}"))?;
        m.insert("epoch".into(), trainer.data_position as f64 / examples.len() as f64);
        let last = n == total;
        let eval_due = (cfg.eval.every > 0 && n % cfg.eval.every == 0) || (last && (cfg.eval.before_and_after || cfg.eval.every > 0));
        if eval_due && !evaluator.is_empty() {
            let t = Instant::now();
            let e = evaluator.run(be, &trainer.model)?;
            m.insert("timing/eval".into(), t.elapsed().as_secs_f64());
            m.extend(e.clone());
            if last {
                after = Some(e);
            }
        }
        log.append(n, &m)?;
        progress.step(n, &summary(&m));
        if opts.stop_after == Some(n) {
            progress.finish();
            return Ok(SftOutcome { final_dir: None, before, after });
        }
        if n % cfg.checkpoint.every.max(1) == 0 || last {
            trainer.save(be, out)?;
        }
    }
    progress.finish();
    if let (Some(b), Some(a)) = (&before, &after) {
        println!("{}", before_after(b, a));
    }
    let final_dir = std::fs::read_to_string(out.join(LATEST)).ok().map(|s| out.join(s.trim()));
    if let Some(d) = &final_dir {
        eprintln!("final model: {} (atomrl train ... model.path={})", d.display(), d.display());
    }
    Ok(SftOutcome { final_dir, before, after })
}

/// One update on `chosen` (packed into micro-batches) and its metrics. A non-finite gradient
/// skips the update, counted in `skipped`; the weights stay as they were.
fn train_step<B: Backend>(be: &B, trainer: &mut Trainer<B>, chosen: &[&Tokenized], micro_batch_tokens: usize, skipped: &mut u64) -> Result<Metrics> {
    let started = Instant::now();
    trainer.data_position += chosen.len() as u64;
    let batches = pack(chosen, micro_batch_tokens);
    let mut m = Metrics::new();
    match trainer.step_ce(be, &batches) {
        Ok(r) => {
            m.insert("loss".into(), r.policy.loss as f64);
            m.insert("grad_norm".into(), r.optimizer.grad_norm as f64);
            m.insert("lr".into(), r.optimizer.lr as f64);
            m.insert("loss_tokens".into(), r.policy.tokens as f64);
        }
        Err(e) if e.downcast_ref::<NonFiniteGradient>().is_some() => {
            *skipped += 1;
            trainer.step += 1;
            trainer.history["skipped_updates"] = json!(*skipped);
        }
        Err(e) => return Err(e),
    }
    let tokens: usize = chosen.iter().map(|e| e.tokens.len()).sum();
    let secs = started.elapsed().as_secs_f64();
    m.insert("tokens".into(), tokens as f64);
    m.insert("examples".into(), chosen.len() as f64);
    m.insert("train/skipped_updates".into(), *skipped as f64);
    m.insert("timing/step".into(), secs);
    m.insert("throughput/tokens_per_s".into(), tokens as f64 / secs);
    Ok(m)
}

fn evaluator<'a>(cfg: &'a SftConfig, tokenizer: &'a Tokenizer, notes: &mut Vec<String>) -> Result<Evaluator<'a>> {
    let examples = load_tokenized(tokenizer, &cfg.data.eval, &[], &[], cfg.data.max_tokens, notes)?;
    let e = &cfg.eval;
    let mut tasks = Vec::new();
    let mut too_long = 0;
    for f in &e.tasks {
        let (loaded, errors) = load_tasks(f, BadLine::Skip)?;
        for err in &errors {
            notes.push(format!("{}: skipped {err}", f.display()));
        }
        for task in loaded.into_iter().filter(|t| e.tiers.is_empty() || e.tiers.contains(&t.tier)) {
            let ids = prompt_ids(tokenizer, &task)?;
            if ids.len() > e.max_prompt_tokens {
                too_long += 1;
                continue;
            }
            tasks.push(PromptedTask { task, prompt_ids: ids });
        }
    }
    if too_long > 0 {
        notes.push(format!("left out {too_long} held-out tasks whose prompt is longer than {} tokens", e.max_prompt_tokens));
    }
    let grader = if tasks.is_empty() {
        None
    } else {
        let workers = if e.workers == 0 { GraderConfig::default().workers } else { e.workers };
        let grader = Grader::new(GraderConfig { workers, ..GraderConfig::default() })?;
        let all: Vec<Task> = tasks.iter().map(|t| t.task.clone()).collect();
        grader.prepare(&all)?;
        Some(grader)
    };
    Ok(Evaluator { cfg, tokenizer, examples, tasks, grader })
}

/// A fresh trainer on the configured model, or the run directory's latest checkpoint.
fn start<B: Backend>(be: &B, cfg: &SftConfig, opts: &SftOptions) -> Result<Trainer<B>> {
    Trainer::resume_or_new(be, &opts.output, opts.resume, &cfg.model.path, train_config(cfg))
}

fn summary(m: &Metrics) -> String {
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let mut s = format!("loss {:.4} lr {:.2e} {:.0} tok/s {:.1}s", get("loss"), get("lr"), get("throughput/tokens_per_s"), get("timing/step"));
    if let Some(l) = m.get("eval/loss") {
        s.push_str(&format!(" eval/loss {l:.4}"));
    }
    if let Some(r) = m.get("eval/reward/mean") {
        s.push_str(&format!(" eval/reward {r:.3}"));
    }
    s
}

/// The evaluation metrics before and after the run, side by side.
pub fn before_after(before: &Metrics, after: &Metrics) -> String {
    let mut s = format!("{:<28} {:>10} {:>10}\n", "metric", "before", "after");
    for (k, a) in after {
        let b = before.get(k).copied().unwrap_or(f64::NAN);
        s.push_str(&format!("{k:<28} {b:>10.3} {a:>10.3}\n"));
    }
    s
}

/// Reads an SFT config file with overrides.
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<SftConfig> {
    crate::config::load(path, overrides)
}
