//! testgen: code + a description of the expected behaviour → a pytest file. It runs on the
//! fixed and on the buggy tree; reward 1 iff at least one of its tests fails on the buggy tree
//! and passes on the fixed tree, and none fails on the fixed tree.

use super::grader::{abnormal_end, Grading, Variant};
use super::parse::python_code;
use super::pysrc::syntax_ok;
use super::task::Task;
use super::{clip, snippets_block, ChatMessage, Outcome, Reason};
use anyhow::Result;

const SYSTEM: &str = "You write pytest tests for Python code. Answer with one complete test file \
in a single ```python block and nothing else.";

/// Where the answer is written, relative to the tree.
pub fn test_path(task: &Task) -> String {
    if let Some(p) = task.env.as_ref().and_then(|e| e.testgen_path.clone()) {
        return p;
    }
    let dir = task
        .FAIL_TO_PASS
        .first()
        .and_then(|id| id.split("::").next())
        .and_then(|f| f.rsplit_once('/').map(|(d, _)| d.to_string()))
        .unwrap_or_else(|| "tests".into());
    format!("{dir}/test_issue_regression.py")
}

pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    let user = format!(
        "Expected behaviour:\n{}\n\nCurrent code:\n{}\nWrite a pytest test file that checks this behaviour. At least one \
         test must fail on the current code and pass once the code is fixed; all tests must pass on fixed code. The file \
         is saved as {} and run with pytest from the repository root. Answer with the file in one ```python block.",
        clip(task.problem_statement.trim(), 1500),
        snippets_block(task, 2500),
        test_path(task),
    );
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

pub fn gold(task: &Task) -> String {
    let code = task.gold_test.clone().unwrap_or_default();
    format!("```python\n{}```\n", code)
}

pub(crate) fn grade(g: &mut Grading, completion: &str) -> Result<Outcome> {
    let Some(code) = python_code(completion) else {
        return Ok(Outcome::fail(Reason::Format, "no Python code block found"));
    };
    if !syntax_ok(&code) {
        return Ok(Outcome::fail(
            Reason::Syntax,
            "the test file does not parse",
        ));
    }
    let path = test_path(g.task);
    let ids = vec![path.clone()];
    let ours = |id: &String| id.starts_with(&format!("{path}::"));

    let fixed = g.workspace(Variant::Fixed)?;
    g.write(&fixed, &path, &code)?;
    let (on_fixed, out) = g.run_tests(&fixed, &ids)?;
    drop(fixed);
    if let Some(o) = abnormal_end(&out) {
        return Ok(o);
    }
    if !on_fixed.complete {
        return Ok(Outcome::fail(
            Reason::Crash,
            format!("no test report: {}", clip(out.stderr.trim(), 300)),
        ));
    }
    let tests: Vec<String> = on_fixed
        .outcomes
        .keys()
        .filter(|id| ours(id))
        .cloned()
        .collect();
    if tests.is_empty() {
        let why = if on_fixed.collect_errors.is_empty() {
            "no test collected"
        } else {
            "the file does not import"
        };
        return Ok(Outcome::fail(Reason::NoTests, why));
    }
    if let Some(bad) = tests.iter().find(|id| on_fixed.failed(id)) {
        return Ok(Outcome::fail(
            Reason::FailsOnFixed,
            format!("{bad} fails on the fixed code"),
        ));
    }

    let buggy = g.workspace(Variant::Buggy)?;
    g.write(&buggy, &path, &code)?;
    let (on_buggy, out) = g.run_tests(&buggy, &ids)?;
    if let Some(o) = abnormal_end(&out) {
        return Ok(o);
    }
    if !on_buggy.complete {
        return Ok(Outcome::fail(
            Reason::Crash,
            format!(
                "no test report on the buggy code: {}",
                clip(out.stderr.trim(), 300)
            ),
        ));
    }
    let catches = tests
        .iter()
        .filter(|id| on_fixed.passed(id) && on_buggy.failed(id))
        .count();
    if catches > 0 {
        let mut o = Outcome::pass();
        o.metrics.insert("catching_tests".into(), catches as f32);
        Ok(o)
    } else {
        Ok(Outcome::fail(
            Reason::PassesOnBuggy,
            "no test fails on the buggy code",
        ))
    }
}
