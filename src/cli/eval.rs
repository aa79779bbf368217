//! `atomrl eval`: grade given completions (or the gold answers) and print per-skill results.

use crate::skills::{
    gold_completion, load_tasks, BadLine, Grade, Grader, GraderConfig, Skill, Task,
};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Task instances (JSONL).
    #[arg(long)]
    pub tasks: PathBuf,
    /// Completions (JSONL of {"instance_id", "completion"}; any number per instance).
    #[arg(long, required_unless_present_any = ["gold", "model"])]
    pub completions: Option<PathBuf>,
    /// Grade this model's own completions (a Hugging Face directory) instead of a file.
    #[arg(long, conflicts_with_all = ["completions", "gold"])]
    pub model: Option<PathBuf>,
    /// With --model: completions per task.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// With --model: sampling temperature (0 is greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// With --model: most tokens per completion.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// With --model: at most this many tasks per skill, taken in turn from each repository (0: all).
    #[arg(long, default_value_t = 0)]
    pub per_skill: usize,
    /// Keep only tasks of this tier (easy or normal).
    #[arg(long)]
    pub tier: Option<crate::skills::Tier>,
    /// Grade each task's gold answer instead of a completions file.
    #[arg(long)]
    pub gold: bool,
    /// One JSON line per graded completion, then a summary line.
    #[arg(long)]
    pub json: bool,
    /// Concurrent gradings (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Refuse the whole input if any line is malformed (default: report and skip).
    #[arg(long)]
    pub strict: bool,
    /// Run completions without the bwrap sandbox when it cannot work here (trusted input only).
    #[arg(long)]
    pub allow_unsandboxed: bool,
}

#[derive(Deserialize)]
struct CompletionRow {
    instance_id: String,
    completion: String,
}

/// Mean reward, pass@k and Avg@k per skill, from the rewards of each instance's completions.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SkillSummary {
    pub instances: usize,
    pub completions: usize,
    pub mean_reward: f64,
    /// The smallest number of completions of any instance: pass@k and Avg@k use it.
    pub k: usize,
    pub pass_at_1: f64,
    pub pass_at_k: f64,
    pub avg_at_k: f64,
}

/// Unbiased pass@k (Chen et al. 2021) for n samples of which c passed.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || n < k {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    let mut p = 1.0;
    for i in (n - c + 1)..=n {
        p *= 1.0 - k as f64 / i as f64;
    }
    1.0 - p
}

pub fn summarize(per_instance: &BTreeMap<Skill, Vec<Vec<f32>>>) -> BTreeMap<Skill, SkillSummary> {
    let mut out = BTreeMap::new();
    for (skill, groups) in per_instance {
        let groups: Vec<&Vec<f32>> = groups.iter().filter(|g| !g.is_empty()).collect();
        if groups.is_empty() {
            continue;
        }
        let k = groups.iter().map(|g| g.len()).min().unwrap_or(0);
        let all: Vec<f32> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let n_inst = groups.len() as f64;
        let pass = |kk: usize| {
            groups
                .iter()
                .map(|g| pass_at_k(g.len(), g.iter().filter(|r| **r >= 1.0).count(), kk))
                .sum::<f64>()
                / n_inst
        };
        let avg_at_k = groups
            .iter()
            .map(|g| g[..k].iter().map(|r| *r as f64).sum::<f64>() / k as f64)
            .sum::<f64>()
            / n_inst;
        out.insert(
            *skill,
            SkillSummary {
                instances: groups.len(),
                completions: all.len(),
                mean_reward: all.iter().map(|r| *r as f64).sum::<f64>() / all.len() as f64,
                k,
                pass_at_1: pass(1),
                pass_at_k: pass(k),
                avg_at_k,
            },
        );
    }
    out
}

pub fn run(args: EvalArgs) -> Result<()> {
    let on_error = if args.strict { BadLine::Refuse } else { BadLine::Skip };
    let (mut tasks, errors) = load_tasks(&args.tasks, on_error)?;
    if let Some(tier) = args.tier {
        tasks.retain(|t| t.tier == tier);
    }
    for e in &errors {
        eprintln!("warning: {}: {e} (skipped)", args.tasks.display());
    }
    let items: Vec<(&Task, String)> = if args.gold {
        tasks.iter().map(|t| (t, gold_completion(t))).collect()
    } else if let Some(model) = &args.model {
        model_completions(&args, model, &tasks)?
    } else {
        read_completions(&args, &tasks)?
    };
    let grades = grade_all(&args, &items)?;
    let infra = report(&args, &items, &grades);
    if infra > 0 {
        bail!("{infra} grading(s) failed for infrastructure reasons (see above)");
    }
    Ok(())
}

/// The `--completions` file, each row matched to its task; malformed rows and rows of unknown
/// instances are reported and skipped (or refuse the file with `--strict`).
fn read_completions<'a>(args: &EvalArgs, tasks: &'a [Task]) -> Result<Vec<(&'a Task, String)>> {
    let by_id: HashMap<&str, &Task> = tasks.iter().map(|t| (t.instance_id.as_str(), t)).collect();
    let path = args.completions.as_ref().context("--completions is required")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut items, mut bad, mut unknown) = (Vec::new(), Vec::new(), 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CompletionRow>(line) {
            Ok(row) => match by_id.get(row.instance_id.as_str()) {
                Some(t) => items.push((*t, row.completion)),
                None => unknown += 1,
            },
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() && args.strict {
        bail!("{}: {} malformed line(s): {}", path.display(), bad.len(), bad.join("; "));
    }
    for b in &bad {
        eprintln!("warning: {}: {b} (skipped)", path.display());
    }
    if unknown > 0 {
        eprintln!("warning: {unknown} completion(s) for instances not in {} (skipped)", args.tasks.display());
    }
    Ok(items)
}

/// Every completion graded in the sandbox, after the sources of the tasks concerned are ready.
fn grade_all(args: &EvalArgs, items: &[(&Task, String)]) -> Result<Vec<Grade>> {
    let mut cfg = GraderConfig::default();
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    cfg.sandbox.allow_unsandboxed = args.allow_unsandboxed;
    let grader = Grader::new(cfg)?;
    let mut seen = std::collections::HashSet::new();
    let used: Vec<Task> = items.iter().filter(|(t, _)| seen.insert(t.instance_id.clone())).map(|(t, _)| (*t).clone()).collect();
    grader.prepare(&used)?;
    let refs: Vec<(&Task, &str)> = items.iter().map(|(t, c)| (*t, c.as_str())).collect();
    Ok(grader.grade_batch(&refs))
}

/// Prints a JSON line per grade (`--json`) and the per-skill summary; returns how many gradings
/// failed for infrastructure reasons.
fn report(args: &EvalArgs, items: &[(&Task, String)], grades: &[Grade]) -> usize {
    let mut per_instance: BTreeMap<Skill, BTreeMap<&str, Vec<f32>>> = BTreeMap::new();
    let mut infra = 0;
    for ((task, _), g) in items.iter().zip(grades) {
        if g.is_infra_error() {
            infra += 1;
            eprintln!("error: {}: {}", task.instance_id, g.detail);
        }
        per_instance.entry(task.skill).or_default().entry(task.instance_id.as_str()).or_default().push(g.reward);
        if args.json {
            let line = serde_json::json!({
                "instance_id": task.instance_id, "skill": task.skill, "reward": g.reward, "reason": g.reason,
                "detail": g.detail, "metrics": g.metrics, "ms": g.timings.total_ms,
            });
            println!("{line}");
        }
    }
    let groups: BTreeMap<Skill, Vec<Vec<f32>>> = per_instance.into_iter().map(|(s, m)| (s, m.into_values().collect())).collect();
    let summary = summarize(&groups);
    if args.json {
        let s: BTreeMap<String, &SkillSummary> = summary.iter().map(|(k, v)| (k.to_string(), v)).collect();
        println!("{}", serde_json::json!({ "summary": s, "graded": grades.len(), "infra_errors": infra }));
    } else {
        println!("{:<10} {:>9} {:>11} {:>11} {:>3} {:>8} {:>8} {:>8}", "skill", "instances", "completions", "mean", "k", "pass@1", "pass@k", "avg@k");
        for (skill, s) in &summary {
            println!(
                "{:<10} {:>9} {:>11} {:>11.3} {:>3} {:>8.3} {:>8.3} {:>8.3}",
                skill.to_string(),
                s.instances,
                s.completions,
                s.mean_reward,
                s.k,
                s.pass_at_1,
                s.pass_at_k,
                s.avg_at_k
            );
        }
    }
    infra
}

/// Each task's prompt answered `--samples` times by the model at `model_dir` (CPU backend).
fn model_completions<'a>(args: &EvalArgs, model_dir: &std::path::Path, tasks: &'a [Task]) -> Result<Vec<(&'a Task, String)>> {
    use crate::backend::cpu::Cpu;
    use crate::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};
    let tokenizer = crate::tokenizer::Tokenizer::from_dir(model_dir)?;
    let model = crate::model::Model::load(&Cpu, model_dir).with_context(|| format!("loading {}", model_dir.display()))?;
    let picked = crate::skills::pick_per_skill(tasks, args.per_skill, |t| t);
    let k = args.samples.max(1);
    let sampling = SamplingConfig { temperature: args.temperature, max_new_tokens: args.max_new_tokens, ..SamplingConfig::default() };
    let mut requests = Vec::new();
    for (i, t) in picked.iter().enumerate() {
        let prompt = crate::rl::tasks::prompt_ids(&tokenizer, t)?;
        for j in 0..k {
            requests.push(GenRequest { id: (i * k + j) as u32, prompt: prompt.clone(), sampling: sampling.clone() });
        }
    }
    let mut stop_ids = tokenizer.stop_ids.clone();
    stop_ids.extend(&model.config.eos_token_ids);
    eprintln!("generating {} completions with {}", requests.len(), model_dir.display());
    let out = generate(&Cpu, &model, requests, &EngineOptions { max_batch: 16, stop_ids, ..EngineOptions::default() }, Some(&tokenizer), |_, _| {})?;
    out.iter()
        .map(|c| Ok((picked[c.id as usize / k], crate::rl::eval::strip_eos(&tokenizer.decode(&c.completion_ids)?).to_string())))
        .collect()
}
