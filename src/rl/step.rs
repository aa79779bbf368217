//! One RL step, as data: the six stages called in order and nothing else.
//!
//! rollout (the policy samples a group per prompt) → grade (the sandbox scores each completion)
//! → advantages (group-relative) → loss, backward and optimizer (the trainer core, over
//! mini-batches of micro-batches).
//!
//! Where it departs from the textbook algorithm:
//! - stages 1–2 can run in several rounds of fresh prompts per step, until enough groups have
//!   rewards that differ (`rollout.max_sampling_rounds`, DAPO's dynamic sampling);
//! - old log-probs are not recomputed: the rollout engine is the same runtime on the same weights,
//!   so on the first pass the ratio is taken against the current weights (exactly 1), and later
//!   passes (several epochs or mini-batches) use the log-probs the engine reported while sampling;
//!   the difference between the two is reported as `rollout/logprob_mismatch`;
//! - groups whose rewards are all equal can be dropped before the update (`filter_zero_std`):
//!   their advantages are zero, so they would cost a backward pass and change nothing but the
//!   normalisation;
//! - a step whose gradient is not finite is skipped and counted; the weights stay as they were.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::agent::{agent_messages, run_episodes, AgentRequest, Trajectory};
use crate::backend::Backend;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::rollout::{generate, Completion, EngineOptions, FinishReason, GenRequest, SamplingConfig};
use crate::skills::Grade;
use crate::tokenizer::Tokenizer;

use super::advantages::{group_advantages, informative_groups, Advantages};
use super::environment::{grade_guarded, Environment};
use super::eval::strip_eos;
use super::objective::{policy_loss, PolicyRows};
use super::optimizer::NonFiniteGradient;
use super::run_config::{RolloutMode, RunConfig};
use super::tasks::TaskPool;
use super::trainer::{MicroBatch, StepReport, Trainer};

/// What a step reads but does not change.
pub struct StepContext<'a, B: Backend> {
    pub be: &'a B,
    pub cfg: &'a RunConfig,
    pub tokenizer: &'a Tokenizer,
    /// Scores the completions (the skills' `Grader` in `atomrl train`).
    pub env: &'a dyn Environment,
    pub pool: &'a TaskPool,
    /// The frozen reference policy, present only when `objective.kl_coef > 0`.
    pub reference: Option<&'a Model<B>>,
}

/// One sampled completion (or agent trajectory) and where it came from.
pub struct Rollout {
    /// Index into the task pool.
    pub task: usize,
    /// The prompt group it belongs to.
    pub group: u32,
    /// The prompt, and every token after it as it went through the model.
    pub completion: Completion,
    /// Per token of `completion.completion_ids`: 1 where the policy sampled it (trained on), 0
    /// for observations of an agent's tools.
    pub mask: Vec<f32>,
    /// What the grader scores.
    pub answer: String,
    /// Turns, tool calls and how the episode ended, in agent mode.
    pub agent: Option<Trajectory>,
}

/// Runs one step on `trainer` and returns its metrics.
pub fn step<B: Backend>(ctx: &StepContext<B>, trainer: &mut Trainer<B>) -> Result<Metrics> {
    let started = Instant::now();
    let mut m = Metrics::new();
    let (rollouts, grades, rewards) = sample_groups(ctx, trainer, &mut m)?;
    let groups: Vec<u32> = rollouts.iter().map(|r| r.group).collect();
    let adv = group_advantages(&rewards, &groups, &ctx.cfg.advantages)?;

    let t = Instant::now();
    let batches = mini_batches(ctx, &rollouts, &adv)?;
    let reports = update(ctx, trainer, &batches, &mut m)?;
    m.insert("timing/train".into(), t.elapsed().as_secs_f64());

    rollout_metrics(ctx, &rollouts, &grades, &adv, &mut m);
    train_metrics(&reports, &mut m);
    let tokens: usize = rollouts.iter().map(|r| r.completion.prompt_ids.len() + r.completion.completion_ids.len()).sum();
    let secs = started.elapsed().as_secs_f64();
    m.insert("timing/step".into(), secs);
    m.insert("throughput/tokens_per_s".into(), tokens as f64 / secs);
    Ok(m)
}

/// Stages 1–2, in rounds: each round samples `prompts_per_step` prompts, rolls out a group per
/// prompt and grades it. Further rounds run only while too few groups carry a signal (DAPO's
/// dynamic sampling, `rollout.max_sampling_rounds`). Returns the rollouts, their grades and
/// their rewards (a malformed tool call costs the episode `agent.malformed_penalty`).
fn sample_groups<B: Backend>(ctx: &StepContext<B>, trainer: &mut Trainer<B>, m: &mut Metrics) -> Result<(Vec<Rollout>, Vec<Grade>, Vec<f32>)> {
    let r = &ctx.cfg.rollout;
    let wanted = if r.min_informative_groups == 0 { r.prompts_per_step } else { r.min_informative_groups };
    let (mut rollouts, mut grades, mut rewards, mut groups) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut generate_s, mut grade_s, mut rounds, mut informative) = (0.0, 0.0, 0, 0);
    while rounds < r.max_sampling_rounds {
        let picks = ctx.pool.sample(&mut trainer.rng, r.prompts_per_step);
        trainer.data_position += picks.len() as u64;
        let seed = trainer.rng.next_u64();
        let t = Instant::now();
        let mut batch = match r.mode {
            RolloutMode::Single => rollout(ctx, &trainer.model, &picks, seed)?,
            RolloutMode::Agent => agent_rollout(ctx, &trainer.model, &picks, seed)?,
        };
        generate_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let batch_grades = grade(ctx, &batch);
        grade_s += t.elapsed().as_secs_f64();
        let offset = (rounds * r.prompts_per_step) as u32;
        for (x, g) in batch.iter_mut().zip(&batch_grades) {
            x.group += offset;
            groups.push(x.group);
            rewards.push(g.reward - ctx.cfg.agent.malformed_penalty * x.agent.as_ref().map_or(0, |a| a.malformed) as f32);
        }
        rollouts.extend(batch);
        grades.extend(batch_grades);
        rounds += 1;
        informative = informative_groups(&rewards, &groups);
        if informative >= wanted {
            break;
        }
    }
    m.insert("timing/generate".into(), generate_s);
    m.insert("timing/grade".into(), grade_s);
    m.insert("rollout/sampling_rounds".into(), rounds as f64);
    m.insert("rollout/informative_groups".into(), informative as f64);
    Ok((rollouts, grades, rewards))
}

/// Stage 1: `group_size` completions for each picked prompt, sampled by the policy.
pub fn rollout<B: Backend>(ctx: &StepContext<B>, policy: &Model<B>, picks: &[usize], seed: u64) -> Result<Vec<Rollout>> {
    let r = &ctx.cfg.rollout;
    let sampling = SamplingConfig { temperature: r.temperature, top_k: r.top_k, top_p: r.top_p, min_p: r.min_p, seed, max_new_tokens: r.max_response_tokens, stop: Vec::new() };
    let requests: Vec<GenRequest> = picks
        .iter()
        .enumerate()
        .flat_map(|(g, &task)| (0..r.group_size).map(move |j| (g, j, task)))
        .map(|(g, j, task)| GenRequest { id: (g * r.group_size + j) as u32, prompt: ctx.pool.tasks[task].prompt_ids.clone(), sampling: sampling.clone() })
        .collect();
    let mut stop_ids = ctx.tokenizer.stop_ids.clone();
    stop_ids.extend(&policy.config.eos_token_ids);
    let opts = EngineOptions { max_batch: r.max_batch, stop_ids, ..EngineOptions::default() };
    let completions = generate(ctx.be, policy, requests, &opts, None, |_, _| {})?;
    completions
        .into_iter()
        .map(|c| {
            let g = c.id as usize / r.group_size;
            let text = ctx.tokenizer.decode(&c.completion_ids)?;
            let mask = vec![1.0; c.completion_ids.len()];
            Ok(Rollout { task: picks[g], group: g as u32, completion: c, mask, answer: strip_eos(&text).to_string(), agent: None })
        })
        .collect()
}

/// Stage 1 in agent mode: `group_size` episodes per picked task, each a multi-turn trajectory
/// in its own sandboxed workspace (see `agent`).
pub fn agent_rollout<B: Backend>(ctx: &StepContext<B>, policy: &Model<B>, picks: &[usize], seed: u64) -> Result<Vec<Rollout>> {
    let r = &ctx.cfg.rollout;
    let grader = ctx.env.grader().context("rollout.mode = \"agent\" needs the sandboxed grader as the environment")?;
    let requests: Vec<AgentRequest> = picks
        .iter()
        .flat_map(|&task| std::iter::repeat_n(task, r.group_size))
        .map(|task| {
            let t = &ctx.pool.tasks[task];
            AgentRequest { task: &t.task, messages: agent_messages(&t.task), prompt_ids: t.prompt_ids.clone() }
        })
        .collect();
    let sampling = SamplingConfig { temperature: r.temperature, top_k: r.top_k, top_p: r.top_p, min_p: r.min_p, seed, max_new_tokens: 1, stop: Vec::new() };
    let mut stop_ids = ctx.tokenizer.stop_ids.clone();
    stop_ids.extend(&policy.config.eos_token_ids);
    let opts = EngineOptions { max_batch: r.max_batch, stop_ids, ..EngineOptions::default() };
    let trajectories = run_episodes(ctx.be, policy, ctx.tokenizer, grader, &requests, &ctx.cfg.agent, &sampling, &opts)?;
    Ok(trajectories
        .into_iter()
        .enumerate()
        .map(|(n, t)| {
            let g = n / r.group_size;
            let finish_reason = if t.end.is_budget() { FinishReason::Length } else { FinishReason::Stop };
            let completion = Completion { id: n as u32, prompt_ids: t.prompt_ids.clone(), completion_ids: t.tokens.clone(), completion_logprobs: t.logprobs.clone(), finish_reason };
            let mask = t.policy.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
            Rollout { task: picks[g], group: g as u32, completion, mask, answer: t.answer.clone(), agent: Some(t) }
        })
        .collect())
}

/// Stage 2: every completion graded by the environment. Never fails: a completion that breaks
/// the grader, or a grader that panics, scores 0 with a reason (see `grade_guarded`).
pub fn grade<B: Backend>(ctx: &StepContext<B>, rollouts: &[Rollout]) -> Vec<Grade> {
    let items: Vec<(&crate::skills::Task, &str)> = rollouts.iter().map(|r| (&ctx.pool.tasks[r.task].task, r.answer.as_str())).collect();
    let grades = grade_guarded(ctx.env, &items);
    let faults: Vec<&Grade> = grades.iter().filter(|g| g.reason == "internal" || g.is_infra_error()).collect();
    if let Some(first) = faults.first() {
        eprintln!("note: {} of {} completions could not be graded and score 0 ({}: {})", faults.len(), grades.len(), first.reason, first.detail);
    }
    grades
}

/// Stage 3 → batches: each kept rollout becomes a packed sequence (prompt + completion) whose
/// completion rows carry its advantage; sequences are split into `mini_batches` optimizer
/// batches, each cut into micro-batches of at most `micro_batch_tokens`.
fn mini_batches<B: Backend>(ctx: &StepContext<B>, rollouts: &[Rollout], adv: &Advantages) -> Result<Vec<Vec<MicroBatch>>> {
    let cfg = ctx.cfg;
    let multi_pass = cfg.trainer.epochs * cfg.trainer.mini_batches > 1;
    let kept: Vec<usize> = (0..rollouts.len()).filter(|&i| adv.keep[i]).collect();
    let per_mini = kept.len().div_ceil(cfg.trainer.mini_batches).max(1);
    let mut out = Vec::new();
    for chunk in kept.chunks(per_mini) {
        let mut micro: Vec<MicroBatch> = Vec::new();
        let mut current = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
        let mut rollout_logp = Vec::new();
        for &i in chunk {
            let c = &rollouts[i].completion;
            let len = c.prompt_ids.len() + c.completion_ids.len();
            if !current.advantages.is_empty() && current.tokens.len() + len > cfg.trainer.micro_batch_tokens {
                current.rollout_logp = Some(std::mem::take(&mut rollout_logp));
                micro.push(std::mem::replace(&mut current, MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() }));
            }
            let masked = cfg.rollout.mask_truncated && c.finish_reason == FinishReason::Length;
            current.tokens.extend(&c.prompt_ids);
            current.tokens.extend(&c.completion_ids);
            current.cu_seqlens.push(current.tokens.len() as u32);
            let (mask, logp) = loss_rows(c, &rollouts[i].mask, masked);
            current.mask.extend(mask);
            rollout_logp.extend(logp);
            current.advantages.push(adv.advantages[i]);
        }
        if !current.advantages.is_empty() {
            current.rollout_logp = Some(rollout_logp);
            micro.push(current);
        }
        for b in &mut micro {
            if multi_pass {
                b.old_logp = b.rollout_logp.clone();
            }
            if let Some(reference) = ctx.reference {
                b.ref_logp = Some(reference_logp(ctx, reference, b)?);
            }
        }
        if micro.iter().any(|b| b.mask.iter().any(|&x| x > 0.0)) {
            out.push(micro);
        }
    }
    Ok(out)
}

/// The loss mask and sampling log-probs of one sequence (prompt + completion), per row: row r
/// predicts token r+1, so rows `p-1 .. len-2` predict the completion; `mask` says which of the
/// completion's tokens the policy sampled. `masked` leaves the whole sequence out.
pub fn loss_rows(c: &Completion, mask: &[f32], masked: bool) -> (Vec<f32>, Vec<f32>) {
    let (p, len) = (c.prompt_ids.len(), c.prompt_ids.len() + c.completion_ids.len());
    let mut rows = vec![0f32; len];
    let mut logp = vec![0f32; len];
    for (j, lp) in c.completion_logprobs.iter().enumerate() {
        rows[p - 1 + j] = if masked { 0.0 } else { mask[j] };
        logp[p - 1 + j] = *lp;
    }
    (rows, logp)
}

/// Per-row log-probs of the batch's tokens under the frozen reference policy.
fn reference_logp<B: Backend>(ctx: &StepContext<B>, reference: &Model<B>, b: &MicroBatch) -> Result<Vec<f32>> {
    let c = &reference.config;
    let fwd = reference.forward_packed(ctx.be, reference.pack(ctx.be, &b.tokens, &b.cu_seqlens)?, None)?;
    let rows = PolicyRows {
        targets: super::objective::next_tokens(&b.tokens, &b.cu_seqlens),
        weights: vec![0.0; b.tokens.len()],
        advantages: vec![0.0; b.tokens.len()],
        old_logp: None,
        ref_logp: None,
        rollout_logp: None,
    };
    let obj = super::objective::ObjectiveConfig { kl_coef: 0.0, tis_cap: None, ..ctx.cfg.objective.clone() };
    Ok(policy_loss(ctx.be, &fwd.hidden, reference.weights.head(), c.hidden_size, c.vocab_size, &rows, &obj, None)?.0)
}

/// Stages 4–6: for each epoch and mini-batch, loss, backward and one AdamW step. A non-finite
/// gradient skips that update (counted in `train/skipped_updates`).
fn update<B: Backend>(ctx: &StepContext<B>, trainer: &mut Trainer<B>, batches: &[Vec<MicroBatch>], m: &mut Metrics) -> Result<Vec<StepReport>> {
    let mut reports = Vec::new();
    let mut skipped = 0;
    for _ in 0..ctx.cfg.trainer.epochs {
        for micro in batches {
            match trainer.step(ctx.be, micro) {
                Ok(r) => reports.push(r),
                Err(e) if e.downcast_ref::<NonFiniteGradient>().is_some() => {
                    eprintln!("note: update skipped, the weights are unchanged: {e}");
                    skipped += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    m.insert("train/updates".into(), reports.len() as f64);
    m.insert("train/skipped_updates".into(), skipped as f64);
    Ok(reports)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

fn rollout_metrics<B: Backend>(ctx: &StepContext<B>, rollouts: &[Rollout], grades: &[Grade], adv: &Advantages, m: &mut Metrics) {
    m.insert("reward/mean".into(), mean(grades.iter().map(|g| g.reward as f64)));
    for (skill, _) in ctx.pool.skills() {
        let rs: Vec<f64> = rollouts.iter().zip(grades).filter(|(r, _)| ctx.pool.tasks[r.task].task.skill == skill).map(|(_, g)| g.reward as f64).collect();
        if !rs.is_empty() {
            m.insert(format!("reward/{}/mean", skill.name()), mean(rs.into_iter()));
        }
    }
    m.insert("frac_reward_zero_std".into(), adv.frac_reward_zero_std as f64);
    let lens: Vec<f64> = rollouts.iter().map(|r| r.completion.completion_ids.len() as f64).collect();
    m.insert("response_length/mean".into(), mean(lens.iter().copied()));
    m.insert("response_length/max".into(), lens.iter().copied().fold(0.0, f64::max));
    m.insert("response_length/clip_ratio".into(), mean(rollouts.iter().map(|r| (r.completion.finish_reason == FinishReason::Length) as u8 as f64)));
    m.insert("grading/infra_errors".into(), grades.iter().filter(|g| g.is_infra_error()).count() as f64);
    m.insert("grading/format_errors".into(), grades.iter().filter(|g| g.reason == "format").count() as f64);
    m.insert("grading/internal_errors".into(), grades.iter().filter(|g| g.reason == "internal").count() as f64);
    m.insert("grading/timeouts".into(), grades.iter().filter(|g| g.reason == "timeout").count() as f64);
    agent_metrics(rollouts, m);
}

/// `num_turns/mean`, `tools/<name>/calls`, `tools/failure_rate` (failed or malformed calls
/// over all calls), `episode/timeout_frac` and `episode/budget_frac` (any budget).
fn agent_metrics(rollouts: &[Rollout], m: &mut Metrics) {
    let episodes: Vec<&Trajectory> = rollouts.iter().filter_map(|r| r.agent.as_ref()).collect();
    if episodes.is_empty() {
        return;
    }
    m.insert("num_turns/mean".into(), mean(episodes.iter().map(|t| t.turns as f64)));
    let mut calls: std::collections::BTreeMap<&str, u32> = crate::agent::tools::Toolbox::tool_names().into_iter().map(|n| (n, 0)).collect();
    for t in &episodes {
        for (name, n) in &t.tool_calls {
            *calls.entry(name.as_str()).or_insert(0) += n;
        }
    }
    let total: u32 = calls.values().sum::<u32>() + episodes.iter().map(|t| t.malformed).sum::<u32>();
    let failed: u32 = episodes.iter().map(|t| t.tool_failures + t.malformed).sum();
    for (name, n) in calls {
        m.insert(format!("tools/{name}/calls"), n as f64);
    }
    m.insert("tools/failure_rate".into(), if total == 0 { 0.0 } else { failed as f64 / total as f64 });
    m.insert("episode/timeout_frac".into(), mean(episodes.iter().map(|t| (t.end == crate::agent::EpisodeEnd::Timeout) as u8 as f64)));
    m.insert("episode/budget_frac".into(), mean(episodes.iter().map(|t| t.end.is_budget() as u8 as f64)));
    m.insert("timing/tools".into(), episodes.iter().map(|t| t.tool_seconds).sum());
}

fn train_metrics(reports: &[StepReport], m: &mut Metrics) {
    if reports.is_empty() {
        return;
    }
    let avg = |f: &dyn Fn(&StepReport) -> f32| mean(reports.iter().map(|r| f(r) as f64));
    m.insert("loss".into(), avg(&|r| r.policy.loss));
    m.insert("kl".into(), avg(&|r| r.policy.kl_mean));
    m.insert("entropy".into(), avg(&|r| r.policy.entropy_mean));
    m.insert("clip_frac/low".into(), avg(&|r| r.policy.clip_frac_low));
    m.insert("clip_frac/high".into(), avg(&|r| r.policy.clip_frac_high));
    m.insert("ratio/mean".into(), avg(&|r| r.policy.ratio_mean));
    m.insert("ratio/min".into(), reports.iter().map(|r| r.policy.ratio_min as f64).fold(f64::INFINITY, f64::min));
    m.insert("ratio/max".into(), reports.iter().map(|r| r.policy.ratio_max as f64).fold(f64::NEG_INFINITY, f64::max));
    m.insert("grad_norm".into(), avg(&|r| r.optimizer.grad_norm));
    m.insert("lr".into(), reports.last().map_or(0.0, |r| r.optimizer.lr as f64));
    // The first update sees the weights that sampled the rollouts: its mismatch is the
    // rollout/trainer numerics gap.
    m.insert("rollout/logprob_mismatch".into(), reports[0].policy.mismatch_kl as f64);
}
