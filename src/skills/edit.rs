//! edit: location + edit instruction + the code → a patch (search/replace blocks or a unified
//! diff). Reward 1 iff every FAIL_TO_PASS and PASS_TO_PASS test passes after the patch; a patch
//! that touches a test file scores 0.

use super::grader::{abnormal_end, Grading, Variant};
use super::patch::{apply_edits, parse_search_replace, parse_unified_diff, FileEdit, HunkLine};
use super::task::Task;
use super::{clip, is_test_path, snippets_block, ChatMessage, Outcome, Reason};
use anyhow::Result;

const SYSTEM: &str =
    "You fix bugs in Python code. Answer with one or more search/replace blocks and \
nothing else. Each block is the file path on its own line, then\n<<<<<<< SEARCH\n(lines copied \
exactly from the file)\n=======\n(the new lines)\n>>>>>>> REPLACE\nKeep SEARCH short: just the \
lines that change, plus a line around them if needed to be unique. Do not edit tests.";

pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    let instruction = task
        .edit_instruction
        .clone()
        .unwrap_or_else(|| task.problem_statement.clone());
    let location = if task.gold_locations.is_empty() {
        String::new()
    } else {
        format!("Location: {}\n", task.gold_locations.join(", "))
    };
    let user = format!(
        "{location}Instruction: {}\n\n{}\nAnswer with search/replace blocks:\npath/to/file.py\n<<<<<<< SEARCH\nold lines\n=======\nnew lines\n>>>>>>> REPLACE",
        clip(instruction.trim(), 1500),
        snippets_block(task, 2500),
    );
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

/// The gold patch as search/replace blocks with one line of context around each change.
pub fn gold(task: &Task) -> String {
    let mut out = String::new();
    for e in parse_unified_diff(&task.patch) {
        let FileEdit::Diff {
            new_path: Some(path),
            hunks,
            ..
        } = &e
        else {
            return fenced_diff(task);
        };
        for h in hunks {
            let first = h
                .lines
                .iter()
                .position(|l| !matches!(l, HunkLine::Context(_)))
                .unwrap_or(0);
            let last = h
                .lines
                .iter()
                .rposition(|l| !matches!(l, HunkLine::Context(_)))
                .unwrap_or(0);
            let lo = first.saturating_sub(1);
            let hi = (last + 1).min(h.lines.len() - 1);
            let (mut search, mut replace) = (String::new(), String::new());
            for l in &h.lines[lo..=hi] {
                match l {
                    HunkLine::Context(s) => {
                        search.push_str(&format!("{s}\n"));
                        replace.push_str(&format!("{s}\n"));
                    }
                    HunkLine::Remove(s) => search.push_str(&format!("{s}\n")),
                    HunkLine::Add(s) => replace.push_str(&format!("{s}\n")),
                }
            }
            if search.trim().is_empty() {
                return fenced_diff(task);
            }
            out.push_str(&format!(
                "{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
            ));
        }
    }
    if out.is_empty() {
        fenced_diff(task)
    } else {
        out
    }
}

fn fenced_diff(task: &Task) -> String {
    format!("```diff\n{}```\n", task.patch)
}

/// The edits in a completion: search/replace blocks if there are any, else a unified diff.
pub fn parse_answer(completion: &str, task: &Task) -> Option<Vec<FileEdit>> {
    let default_path = task.gold_files().into_iter().next();
    if let Some(edits) = parse_search_replace(completion, default_path.as_deref()) {
        return Some(edits);
    }
    let edits = parse_unified_diff(completion);
    (!edits.is_empty()).then_some(edits)
}

pub(crate) fn grade(g: &mut Grading, completion: &str) -> Result<Outcome> {
    let task = g.task;
    let Some(edits) = parse_answer(completion, task) else {
        return Ok(Outcome::fail(
            Reason::Format,
            "no search/replace block or unified diff found",
        ));
    };
    if let Some(t) = edits
        .iter()
        .map(|e| e.path())
        .find(|p| is_test_path(p, task))
    {
        return Ok(Outcome::fail(
            Reason::TouchesTests,
            format!("the patch edits {t}"),
        ));
    }
    let ws = g.workspace(Variant::Buggy)?;
    if let Err(e) = apply_edits(&ws.path, &edits, g.grader.config().fuzz) {
        return Ok(Outcome::fail(Reason::PatchFailed, e.to_string()));
    }
    let ids = task.test_ids();
    let (report, out) = g.run_tests(&ws, &ids)?;
    if let Some(o) = abnormal_end(&out) {
        return Ok(o);
    }
    if !report.complete {
        return Ok(Outcome::fail(
            Reason::Crash,
            format!("no test report: {}", clip(out.stderr.trim(), 300)),
        ));
    }
    let f2p_ok = task.FAIL_TO_PASS.iter().all(|id| report.passed(id));
    let p2p_ok = task.PASS_TO_PASS.iter().all(|id| {
        matches!(
            report.outcomes.get(id).map(String::as_str),
            Some("passed" | "xfailed" | "skipped")
        )
    });
    if f2p_ok && p2p_ok {
        Ok(Outcome::pass())
    } else {
        let bad: Vec<&String> = ids.iter().filter(|id| !report.passed(id)).take(3).collect();
        Ok(Outcome::fail(
            Reason::TestsFailed,
            format!("not passing: {bad:?}"),
        ))
    }
}
