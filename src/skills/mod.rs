//! The five skill environments: for each skill a prompt builder, a gold answer and a grader.
//!
//! `prompt(task)` needs nothing but the task (the code it shows travels in `task.context`);
//! `Grader` owns the sandbox, the worker pool and the source cache, and turns a completion into a
//! `Grade` whose reward is in [0, 1]. Answer formats are written out in each prompt and in
//! docs/skills.md; parsing is forgiving about formatting and strict about content.

pub mod edit;
pub(crate) mod grader;
pub mod localize;
pub mod parse;
pub mod patch;
mod pick;
pub mod pysrc;
pub mod reproduce;
pub mod review;
mod staging;
pub mod task;
pub mod testgen;

pub use grader::{default_cache_dir, Grade, Grader, GraderConfig, Timings};
pub use pick::pick_per_skill;
pub use task::{
    load_tasks, parse_tasks, write_tasks, BadLine, Env, LineError, PromptContext, Review, Skill,
    Snippet, Source, Task, Tier, Verdict,
};

use serde::{Deserialize, Serialize};

pub use crate::tokenizer::ChatMessage;

/// The system and user messages for a task.
pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    match task.skill {
        Skill::Localize => localize::prompt(task),
        Skill::Edit => edit::prompt(task),
        Skill::Testgen => testgen::prompt(task),
        Skill::Reproduce => reproduce::prompt(task),
        Skill::Review => review::prompt(task),
    }
}

/// An answer the grader scores 1 (for tests and supervised warm start).
pub fn gold_completion(task: &Task) -> String {
    match task.skill {
        Skill::Localize => localize::gold(task),
        Skill::Edit => edit::gold(task),
        Skill::Testgen => testgen::gold(task),
        Skill::Reproduce => reproduce::gold(task),
        Skill::Review => review::gold(task),
    }
}

/// Why a completion got its reward. `Pass` is the only reason with reward 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Pass,
    /// No answer in the expected format could be found.
    Format,
    /// The answer is code that does not parse.
    Syntax,
    /// A localize or review answer that does not match.
    Wrong,
    /// An edit that changes test files.
    TouchesTests,
    PatchFailed,
    TestsFailed,
    Timeout,
    /// Killed by a signal or a limit, or no test report.
    Crash,
    /// A generated test file with no test in it.
    NoTests,
    FailsOnFixed,
    PassesOnBuggy,
    /// A reproduction script that fails by its own syntax or import error.
    OwnError,
    /// The grading itself could not run (missing sources, broken gold patch): not the model's fault.
    Infra,
    /// A bug in the grader, caught.
    Internal,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pass => "pass",
            Reason::Format => "format",
            Reason::Syntax => "syntax",
            Reason::Wrong => "wrong",
            Reason::TouchesTests => "touches_tests",
            Reason::PatchFailed => "patch_failed",
            Reason::TestsFailed => "tests_failed",
            Reason::Timeout => "timeout",
            Reason::Crash => "crash",
            Reason::NoTests => "no_tests",
            Reason::FailsOnFixed => "fails_on_fixed",
            Reason::PassesOnBuggy => "passes_on_buggy",
            Reason::OwnError => "own_error",
            Reason::Infra => "infra",
            Reason::Internal => "internal",
        }
    }
}

/// What a skill's grader decides, before timings are attached.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reward: f32,
    pub reason: Reason,
    pub detail: String,
    pub metrics: std::collections::BTreeMap<String, f32>,
}

impl Outcome {
    pub fn pass() -> Self {
        Outcome {
            reward: 1.0,
            reason: Reason::Pass,
            detail: String::new(),
            metrics: Default::default(),
        }
    }
    pub fn fail(reason: Reason, detail: impl Into<String>) -> Self {
        Outcome {
            reward: 0.0,
            reason,
            detail: detail.into(),
            metrics: Default::default(),
        }
    }
}

/// Cuts text to at most `max` bytes on a char boundary, marking the cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}\n[... cut ...]", &text[..cut])
}

/// The code excerpts of a task as fenced blocks, with paths and line numbers.
pub(crate) fn snippets_block(task: &Task, max_chars: usize) -> String {
    let mut out = String::new();
    if let Some(ctx) = &task.context {
        for s in &ctx.snippets {
            let end = s.start_line + s.text.lines().count().saturating_sub(1);
            out.push_str(&format!(
                "{} (lines {}-{}):\n```python\n{}```\n",
                s.path,
                s.start_line,
                end,
                clip(&s.text, max_chars)
            ));
        }
    }
    out
}

/// Is this path a test file (or test helper)?
pub fn is_test_path(path: &str, task: &Task) -> bool {
    let p = path.trim_start_matches("./");
    let name = p.rsplit('/').next().unwrap_or(p);
    let in_test_dir = p
        .split('/')
        .rev()
        .skip(1)
        .any(|d| d == "tests" || d == "test" || d == "testing");
    let listed = task
        .test_ids()
        .iter()
        .any(|id| id.split("::").next() == Some(p));
    in_test_dir
        || listed
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name == "conftest.py"
}
