//! Evaluation with the model's own completions: k samples per held-out task, graded by the
//! environment, summarised per skill as `avg@k` (mean reward) and `pass@k` (any sample scored 1).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::agent::{agent_messages, run_episodes, AgentConfig, AgentRequest};
use crate::backend::Backend;
use crate::model::Model;
use crate::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};
use crate::skills::Skill;
use crate::tokenizer::Tokenizer;

use super::environment::{grade_guarded, Environment};
use super::tasks::PromptedTask;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SkillScore {
    pub tasks: usize,
    pub avg_at_k: f64,
    pub pass_at_k: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub k: usize,
    pub skills: BTreeMap<Skill, SkillScore>,
}

impl EvalReport {
    /// `eval/<skill>/avg@k` and `eval/<skill>/pass@k`, for metrics.jsonl.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (skill, s) in &self.skills {
            out.push((format!("eval/{}/avg@{}", skill.name(), self.k), s.avg_at_k));
            out.push((format!("eval/{}/pass@{}", skill.name(), self.k), s.pass_at_k));
        }
        out
    }
}

/// One graded completion of an evaluation (for `--json` output).
#[derive(Clone, Debug, Serialize)]
pub struct EvalSample {
    pub instance_id: String,
    pub skill: Skill,
    pub reward: f32,
    pub reason: String,
    pub completion: String,
}

pub struct EvalOptions<'a> {
    pub samples: usize,
    pub sampling: SamplingConfig,
    pub max_batch: usize,
    /// Evaluate as agent episodes with these budgets (the tasks' prompts are agent prompts).
    pub agent: Option<&'a AgentConfig>,
}

/// Generates `samples` completions per task and grades them.
pub fn evaluate<B: Backend>(be: &B, model: &Model<B>, tokenizer: &Tokenizer, env: &dyn Environment, tasks: &[&PromptedTask], opts: &EvalOptions) -> Result<(EvalReport, Vec<EvalSample>)> {
    let k = opts.samples.max(1);
    let requests: Vec<GenRequest> = tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| (0..k).map(move |j| (i, j, t)))
        .map(|(i, j, t)| GenRequest { id: (i * k + j) as u32, prompt: t.prompt_ids.clone(), sampling: opts.sampling.clone() })
        .collect();
    let mut stop_ids = tokenizer.stop_ids.clone();
    stop_ids.extend(&model.config.eos_token_ids);
    let engine = EngineOptions { max_batch: opts.max_batch, stop_ids, ..EngineOptions::default() };
    let texts: Vec<String> = match opts.agent {
        None => {
            let completions = generate(be, model, requests, &engine, Some(tokenizer), |_, _| {})?;
            completions.iter().map(|c| Ok(strip_eos(&tokenizer.decode(&c.completion_ids)?).to_string())).collect::<Result<_>>()?
        }
        Some(agent) => {
            let grader = env.grader().context("agent evaluation needs the sandboxed grader as the environment")?;
            let episodes: Vec<AgentRequest> = requests
                .iter()
                .map(|r| {
                    let task = &tasks[r.id as usize / k].task;
                    AgentRequest { task, messages: agent_messages(task), prompt_ids: r.prompt.clone() }
                })
                .collect();
            run_episodes(be, model, tokenizer, grader, &episodes, agent, &opts.sampling, &engine)?.into_iter().map(|t| t.answer).collect()
        }
    };
    let items: Vec<(&crate::skills::Task, &str)> = texts.iter().enumerate().map(|(n, text)| (&tasks[n / k].task, text.as_str())).collect();
    let grades = grade_guarded(env, &items);

    let mut report = EvalReport { k, skills: BTreeMap::new() };
    let mut samples = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let g = &grades[i * k..(i + 1) * k];
        let s = report.skills.entry(t.task.skill).or_default();
        s.tasks += 1;
        s.avg_at_k += g.iter().map(|x| x.reward as f64).sum::<f64>() / k as f64;
        s.pass_at_k += if g.iter().any(|x| x.reward >= 1.0) { 1.0 } else { 0.0 };
        for (j, grade) in g.iter().enumerate() {
            samples.push(EvalSample { instance_id: t.task.instance_id.clone(), skill: t.task.skill, reward: grade.reward, reason: grade.reason.clone(), completion: items[i * k + j].1.to_string() });
        }
    }
    for s in report.skills.values_mut() {
        s.avg_at_k /= s.tasks as f64;
        s.pass_at_k /= s.tasks as f64;
    }
    Ok((report, samples))
}

/// The completion text without a trailing end-of-turn marker the grader should not see.
pub fn strip_eos(text: &str) -> &str {
    let t = text.trim_end();
    for marker in ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"] {
        if let Some(s) = t.strip_suffix(marker) {
            return s;
        }
    }
    t
}

/// Up to `per_skill` tasks of each skill (all when 0), spread over the repositories.
pub fn pick_per_skill(tasks: &[PromptedTask], per_skill: usize) -> Vec<&PromptedTask> {
    crate::skills::pick_per_skill(tasks, per_skill, |t| &t.task)
}
