//! localize: issue text + a repository view → the files (and optionally functions) to change.
//! Reward: the predicted file set equals the gold file set. Also reported: file and function
//! F1, and Acc@k (every gold file among the first k predicted files).

use super::parse::{clean_line, code_blocks};
use super::task::Task;
use super::{clip, ChatMessage, Outcome, Reason};

const SYSTEM: &str = "You find where bugs are in Python repositories. Answer with the files to \
change, one per line, most likely first. You may name the function as path:function \
(methods as path:Class.method). Write nothing else.";

pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    let view = task
        .context
        .as_ref()
        .and_then(|c| c.repo_view.clone())
        .unwrap_or_default();
    let user = format!(
        "Issue:\n{}\n\nRepository:\n{}\nWhich files must change to fix the issue? Answer with one path per line, \
         for example:\npkg/module.py:function_name",
        clip(task.problem_statement.trim(), 1500),
        clip(&view, 2500),
    );
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

pub fn gold(task: &Task) -> String {
    // Functions where known (they name their file), then files without a gold function.
    let funcs = task.gold_functions();
    let mut lines: Vec<String> = funcs.clone();
    for f in task.gold_files() {
        if !funcs.iter().any(|l| l.starts_with(&format!("{f}:"))) {
            lines.push(f);
        }
    }
    lines.join("\n") + "\n"
}

/// Predicted locations: (files in order, functions as `path:qualname`).
pub fn parse_answer(completion: &str) -> Option<(Vec<String>, Vec<String>)> {
    let blocks = code_blocks(completion);
    let text = match blocks.last() {
        Some(b) if !b.body.trim().is_empty() => b.body.clone(),
        _ => completion.to_string(),
    };
    let mut files: Vec<String> = Vec::new();
    let mut funcs: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = clean_line(line);
        let token = l.split_whitespace().next().unwrap_or("");
        let token = token.trim_matches(|c: char| c == '`' || c == ',' || c == '*' || c == '"');
        let (path, func) = match token.split_once(':') {
            Some((p, f)) => (
                p,
                Some(f.trim_matches(|c: char| c == '(' || c == ')' || c == ':')),
            ),
            None => (token, None),
        };
        let path = path.trim_start_matches("./");
        if !path.ends_with(".py") || path.contains("..") {
            continue;
        }
        if !files.iter().any(|f| f == path) {
            files.push(path.to_string());
        }
        if let Some(f) = func.filter(|f| !f.is_empty()) {
            let loc = format!("{path}:{}", f.trim_end_matches("()"));
            if !funcs.contains(&loc) {
                funcs.push(loc);
            }
        }
    }
    (!files.is_empty()).then_some((files, funcs))
}

fn f1(pred: &[String], gold: &[String]) -> f32 {
    if pred.is_empty() || gold.is_empty() {
        return 0.0;
    }
    let hit = pred.iter().filter(|p| gold.contains(p)).count() as f32;
    if hit == 0.0 {
        return 0.0;
    }
    let (p, r) = (hit / pred.len() as f32, hit / gold.len() as f32);
    2.0 * p * r / (p + r)
}

pub fn grade(task: &Task, completion: &str) -> Outcome {
    let Some((files, funcs)) = parse_answer(completion) else {
        return Outcome::fail(Reason::Format, "no .py path found in the answer");
    };
    let gold_files = task.gold_files();
    let gold_funcs = task.gold_functions();
    let mut set_p = files.clone();
    set_p.sort();
    let mut set_g = gold_files.clone();
    set_g.sort();
    let mut out = if set_p == set_g {
        Outcome::pass()
    } else {
        Outcome::fail(
            Reason::Wrong,
            format!("predicted {files:?}, gold {gold_files:?}"),
        )
    };
    out.metrics
        .insert("file_f1".into(), f1(&files, &gold_files));
    if !gold_funcs.is_empty() {
        out.metrics
            .insert("func_f1".into(), f1(&funcs, &gold_funcs));
    }
    for k in [1usize, 3, 5] {
        let top = &files[..files.len().min(k)];
        let all = gold_files.iter().all(|g| top.contains(g));
        out.metrics
            .insert(format!("acc@{k}"), if all { 1.0 } else { 0.0 });
    }
    out
}
