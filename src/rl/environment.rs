//! What the RL loop asks of an environment: a reward for each (task, completion). The five skills'
//! `Grader` (sandbox, worker pool, source cache) is the environment of `atomrl train`; tests plug
//! in exact reward functions, and multi-turn environments will implement the same trait.
//!
//! [`grade_guarded`] is how the loop calls an environment: a panic or a non-finite reward costs
//! the completions concerned a reward of 0 (reason `internal`), never the step.

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::Result;

use crate::skills::{Grade, Grader, Reason, Task};

pub trait Environment: Sync {
    /// Rewards for many completions, in input order.
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade>;

    /// Called once before a run with every task it will see, to surface missing sources or
    /// tools as one error before any work starts.
    fn prepare(&self, _tasks: &[Task]) -> Result<()> {
        Ok(())
    }

    /// The sandboxed grader behind this environment, if there is one: agent rollouts open
    /// their workspaces and run their tools through it.
    fn grader(&self) -> Option<&Grader> {
        None
    }
}

impl Environment for Grader {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        Grader::grade_batch(self, items)
    }

    fn prepare(&self, tasks: &[Task]) -> Result<()> {
        Grader::prepare(self, tasks)
    }

    fn grader(&self) -> Option<&Grader> {
        Some(self)
    }
}

/// A zero reward for a fault of the environment itself.
pub fn internal_error(detail: impl Into<String>) -> Grade {
    Grade { reward: 0.0, reason: Reason::Internal.as_str().into(), detail: detail.into(), metrics: Default::default(), timings: Default::default() }
}

/// Grades `items` with `env`. A batch that panics or returns the wrong number of grades is graded
/// again one completion at a time, so only the completions that break the environment score 0;
/// a reward that is not finite scores 0. Both are `internal` grades with the reason in `detail`.
pub fn grade_guarded(env: &dyn Environment, items: &[(&Task, &str)]) -> Vec<Grade> {
    let mut grades = match catch_unwind(AssertUnwindSafe(|| env.grade_batch(items))) {
        Ok(g) if g.len() == items.len() => g,
        _ => items
            .iter()
            .map(|item| match catch_unwind(AssertUnwindSafe(|| env.grade_batch(std::slice::from_ref(item)))) {
                Ok(mut g) if g.len() == 1 => g.remove(0),
                Ok(g) => internal_error(format!("the environment returned {} grades for one completion", g.len())),
                Err(panic) => internal_error(format!("the environment panicked: {}", panic_message(&panic))),
            })
            .collect(),
    };
    for g in &mut grades {
        if !g.reward.is_finite() {
            *g = internal_error(format!("non-finite reward {} ({}: {})", g.reward, g.reason, g.detail));
        }
    }
    grades
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "(no message)".into())
}
