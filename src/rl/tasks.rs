//! The task mixture: task files loaded once, prompts rendered and tokenized once, and prompts
//! drawn by skill weight (the joint mixture), then uniformly within the skill.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::skills::{self, BadLine, Skill, Task, Tier};
use crate::tokenizer::{ChatMessage, Tokenizer};

use super::run_config::RolloutMode;

use super::trainer::Rng;

/// A task with its rendered prompt.
pub struct PromptedTask {
    pub task: Task,
    pub prompt_ids: Vec<u32>,
}

pub struct TaskPool {
    pub tasks: Vec<PromptedTask>,
    /// Indices into `tasks` per skill, and the skill's weight.
    by_skill: Vec<(Skill, f32, Vec<usize>)>,
    /// Lines skipped as malformed and tasks left out as too long, for the start-up report.
    pub notes: Vec<String>,
}

/// The token ids of `task`'s prompt in the model's chat template.
pub fn prompt_ids(tokenizer: &Tokenizer, task: &Task) -> Result<Vec<u32>> {
    messages_ids(tokenizer, &skills::prompt(task))
}

/// The token ids of `messages` in the model's chat template, ready for the assistant's turn.
pub fn messages_ids(tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>> {
    let text = tokenizer.apply_chat_template(messages, true)?;
    tokenizer.encode(&text)
}

/// How a task becomes the first messages of a rollout.
pub type PromptFn = fn(&Task) -> Vec<ChatMessage>;

/// The prompt builder of a rollout mode: the skill's own prompt, or the agent's with tools.
pub fn prompt_fn(mode: RolloutMode) -> PromptFn {
    match mode {
        RolloutMode::Single => skills::prompt,
        RolloutMode::Agent => crate::agent::agent_messages,
    }
}

impl TaskPool {
    /// Loads `files`, keeps the tiers asked for and prompts (built by `prompt`) of at most
    /// `max_prompt_tokens`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(files: &[PathBuf], bad_lines: BadLine, tiers: &[Tier], weight: impl Fn(Skill) -> f32, tokenizer: &Tokenizer, max_prompt_tokens: usize, prompt: PromptFn) -> Result<Self> {
        let mut notes = Vec::new();
        let mut tasks = Vec::new();
        let mut too_long = 0;
        for f in files {
            let (loaded, errors) = skills::load_tasks(f, bad_lines)?;
            for e in &errors {
                notes.push(format!("{}: skipped {e}", f.display()));
            }
            for task in loaded {
                if !tiers.is_empty() && !tiers.contains(&task.tier) || weight(task.skill) <= 0.0 {
                    continue;
                }
                let ids = messages_ids(tokenizer, &prompt(&task))?;
                if ids.len() > max_prompt_tokens {
                    too_long += 1;
                    continue;
                }
                tasks.push(PromptedTask { task, prompt_ids: ids });
            }
        }
        if too_long > 0 {
            notes.push(format!("left out {too_long} tasks whose prompt is longer than {max_prompt_tokens} tokens"));
        }
        let by_skill: Vec<(Skill, f32, Vec<usize>)> = Skill::ALL
            .iter()
            .map(|&s| (s, weight(s), (0..tasks.len()).filter(|&i| tasks[i].task.skill == s).collect::<Vec<_>>()))
            .filter(|(_, w, ids)| *w > 0.0 && !ids.is_empty())
            .collect();
        if by_skill.is_empty() {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            bail!("no usable task in {} (after tier, weight and prompt-length filters)", names.join(", "));
        }
        Ok(TaskPool { tasks, by_skill, notes })
    }

    /// Skills present in the pool, with how many tasks each has.
    pub fn skills(&self) -> Vec<(Skill, usize)> {
        self.by_skill.iter().map(|(s, _, ids)| (*s, ids.len())).collect()
    }

    /// Draws `n` task indices: a skill by weight, then a task of that skill.
    pub fn sample(&self, rng: &mut Rng, n: usize) -> Vec<usize> {
        let total: f32 = self.by_skill.iter().map(|(_, w, _)| w).sum();
        (0..n)
            .map(|_| {
                let mut x = rng.unit() * total;
                let mut pick = &self.by_skill[self.by_skill.len() - 1];
                for entry in &self.by_skill {
                    if x < entry.1 {
                        pick = entry;
                        break;
                    }
                    x -= entry.1;
                }
                pick.2[rng.below(pick.2.len() as u64) as usize]
            })
            .collect()
    }
}
