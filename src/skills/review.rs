//! review: issue + candidate patch → a verdict. Reward 1 iff the verdict matches the label,
//! which was obtained by running the tests on the candidate when the task was made.

use super::parse::clean_line;
use super::task::{Task, Verdict};
use super::{clip, ChatMessage, Outcome, Reason};

const SYSTEM: &str = "You review patches to Python code. Decide whether the patch fixes the issue \
without breaking anything. Answer with exactly one line: VERDICT: correct or VERDICT: incorrect";

pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    let candidate = task
        .review
        .as_ref()
        .map_or("", |r| r.candidate_patch.as_str());
    let user = format!(
        "Issue:\n{}\n\nCandidate patch:\n```diff\n{}```\nDoes this patch fix the issue correctly? Answer with exactly one line: \
         VERDICT: correct or VERDICT: incorrect",
        clip(task.problem_statement.trim(), 1500),
        clip(candidate, 2500),
    );
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

pub fn gold(task: &Task) -> String {
    match task.review.as_ref().map(|r| r.label) {
        Some(Verdict::Incorrect) => "VERDICT: incorrect\n".into(),
        _ => "VERDICT: correct\n".into(),
    }
}

/// The verdict: the last `VERDICT: x` line, or a completion that is only the word.
pub fn parse_answer(completion: &str) -> Option<Verdict> {
    let word = |s: &str| -> Option<Verdict> {
        match s
            .trim()
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_ascii_lowercase()
            .as_str()
        {
            "correct" => Some(Verdict::Correct),
            "incorrect" => Some(Verdict::Incorrect),
            _ => None,
        }
    };
    let mut found = None;
    for line in completion.lines() {
        let l = clean_line(line);
        let lower = l.to_ascii_lowercase();
        if let Some(pos) = lower.find("verdict") {
            let rest = &l[pos + "verdict".len()..];
            let rest = rest.trim_start_matches(|c: char| {
                c == ':' || c == '=' || c == '*' || c == '-' || c.is_whitespace()
            });
            if let Some(v) = rest.split_whitespace().next().and_then(word) {
                found = Some(v);
            }
        }
    }
    found.or_else(|| {
        let t = completion.trim().trim_matches('`').trim();
        word(t)
    })
}

pub fn grade(task: &Task, completion: &str) -> Outcome {
    let Some(label) = task.review.as_ref().map(|r| r.label) else {
        return Outcome::fail(Reason::Infra, "review task without a label");
    };
    match parse_answer(completion) {
        None => Outcome::fail(Reason::Format, "no `VERDICT: correct|incorrect` line"),
        Some(v) if v == label => Outcome::pass(),
        Some(v) => Outcome::fail(Reason::Wrong, format!("answered {v:?}, label {label:?}")),
    }
}
