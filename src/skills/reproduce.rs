//! reproduce: issue + code → a standalone script. Reward 1 iff it exits non-zero on the buggy
//! tree (not by timeout, signal, or a syntax or import error of its own) and 0 on the fixed tree.

use super::grader::{abnormal_end, Grading, Variant};
use super::parse::python_code;
use super::pysrc::syntax_ok;
use super::task::Task;
use super::{clip, snippets_block, ChatMessage, Outcome, Reason};
use crate::sandbox::Exit;
use anyhow::Result;

/// Where the script is written, relative to the tree.
pub const SCRIPT: &str = "reproduce_issue.py";

const SYSTEM: &str = "You reproduce bugs in Python code. Answer with one standalone Python script \
in a single ```python block and nothing else. The script must exit with a non-zero status (for \
example through a failing assert) while the bug is present, and exit 0 once it is fixed.";

pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    let user = format!(
        "Issue:\n{}\n\nCode:\n{}\nWrite a script that reproduces the issue. It is run as `python {SCRIPT}` from the \
         repository root, so it can import the package. It must exit non-zero while the bug is present and exit 0 \
         once it is fixed. Answer with the script in one ```python block.",
        clip(task.problem_statement.trim(), 1500),
        snippets_block(task, 2500),
    );
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

pub fn gold(task: &Task) -> String {
    let script = task.gold_script.clone().unwrap_or_else(|| {
        // Run the failing tests themselves: pytest exits 1 while they fail.
        let ids: Vec<String> = task.FAIL_TO_PASS.iter().map(|id| format!("{id:?}")).collect();
        format!(
            "import sys\n\nimport pytest\n\nsys.exit(pytest.main([\"-q\", \"-p\", \"no:cacheprovider\", {}]))\n",
            ids.join(", ")
        )
    });
    format!("```python\n{script}```\n")
}

pub(crate) fn grade(g: &mut Grading, completion: &str) -> Result<Outcome> {
    let Some(code) = python_code(completion) else {
        return Ok(Outcome::fail(Reason::Format, "no Python code block found"));
    };
    if !syntax_ok(&code) {
        return Ok(Outcome::fail(Reason::Syntax, "the script does not parse"));
    }
    let buggy = g.workspace(Variant::Buggy)?;
    g.write(&buggy, SCRIPT, &code)?;
    let out = g.run_script(&buggy, SCRIPT)?;
    drop(buggy);
    if let Some(o) = abnormal_end(&out) {
        return Ok(o);
    }
    match out.exit {
        Exit::Code(0) => {
            return Ok(Outcome::fail(
                Reason::PassesOnBuggy,
                "exits 0 on the buggy code",
            ))
        }
        Exit::Code(201) => {
            return Ok(Outcome::fail(
                Reason::OwnError,
                "the script does not compile",
            ))
        }
        Exit::Code(202) => {
            return Ok(Outcome::fail(
                Reason::OwnError,
                format!("import error: {}", last_line(&out.stderr)),
            ))
        }
        Exit::Code(c) if c >= 128 => {
            return Ok(Outcome::fail(Reason::Crash, format!("killed (exit {c})")))
        }
        _ => {}
    }
    let fixed = g.workspace(Variant::Fixed)?;
    g.write(&fixed, SCRIPT, &code)?;
    let out = g.run_script(&fixed, SCRIPT)?;
    if let Some(o) = abnormal_end(&out) {
        return Ok(o);
    }
    if out.success() {
        Ok(Outcome::pass())
    } else {
        Ok(Outcome::fail(
            Reason::FailsOnFixed,
            format!(
                "exits {:?} on the fixed code: {}",
                out.exit,
                last_line(&out.stderr)
            ),
        ))
    }
}

fn last_line(s: &str) -> String {
    clip(s.trim().lines().last().unwrap_or(""), 200)
}
