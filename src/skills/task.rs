//! One task instance: a JSONL row. SWE-bench's field names are kept verbatim so SWE-bench,
//! SWE-Gym and SWE-smith rows load unchanged (a row without `skill` is an `edit` task); the
//! fields after them are atomrl's.

use crate::sandbox::Limits;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Skill {
    Localize,
    #[default]
    Edit,
    Testgen,
    Reproduce,
    Review,
}

impl Skill {
    pub const ALL: [Skill; 5] = [
        Skill::Localize,
        Skill::Edit,
        Skill::Testgen,
        Skill::Reproduce,
        Skill::Review,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skill::Localize => "localize",
            Skill::Edit => "edit",
            Skill::Testgen => "testgen",
            Skill::Reproduce => "reproduce",
            Skill::Review => "review",
        }
    }
}

impl std::fmt::Display for Skill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Skill {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Skill> {
        Skill::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| {
                format!("unknown skill {s:?} (localize, edit, testgen, reproduce, review)")
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Easy,
    #[default]
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Correct,
    Incorrect,
}

/// A patch to review and its label, obtained by running the tests on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub candidate_patch: String,
    pub label: Verdict,
}

/// Where the source tree comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A local directory, used as is (relative paths are relative to the working directory).
    Dir { path: String },
    /// A source distribution in the cache (`<cache>/sdists/<file>`), checked against `sha256`
    /// and unpacked once; its single top-level directory is the tree.
    Sdist {
        name: String,
        version: String,
        file: String,
        sha256: String,
    },
}

/// How to obtain and test the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Env {
    pub source: Source,
    /// The test runner; the test ids are appended. Default: `python -m pytest -q`.
    #[serde(default)]
    pub test_cmd: Option<Vec<String>>,
    /// Directories (relative to the tree) put on PYTHONPATH, e.g. `["src"]`.
    #[serde(default)]
    pub pythonpath: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Where a testgen answer is written, relative to the tree.
    #[serde(default)]
    pub testgen_path: Option<String>,
}

/// Code shown in prompts, so that `prompt(task)` needs nothing but the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptContext {
    /// Tree and file skeletons, for localize.
    #[serde(default)]
    pub repo_view: Option<String>,
    /// Excerpts of the buggy code, for edit, testgen and reproduce.
    #[serde(default)]
    pub snippets: Vec<Snippet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snippet {
    pub path: String,
    /// First line of `text` in the file, 1-based.
    pub start_line: usize,
    pub text: String,
}

#[allow(non_snake_case)]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub instance_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub repo: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub base_commit: String,
    /// The gold fix (buggy → fixed).
    #[serde(default, deserialize_with = "string_or_null")]
    pub patch: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub test_patch: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub problem_statement: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub hints_text: String,
    #[serde(default, deserialize_with = "list_or_json_string")]
    pub FAIL_TO_PASS: Vec<String>,
    #[serde(default, deserialize_with = "list_or_json_string")]
    pub PASS_TO_PASS: Vec<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<String>,

    #[serde(default)]
    pub skill: Skill,
    /// Clean → buggy, for synthesised bugs: the buggy tree is the source plus this patch.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "string_or_null"
    )]
    pub bug_patch: String,
    /// Files (`path`) and functions (`path:qualname`) to change. Derived from `patch` if absent.
    #[serde(default, deserialize_with = "list_or_json_string")]
    pub gold_locations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_instruction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Env>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<PromptContext>,
    /// A test file that fails on the buggy tree and passes on the fixed one (testgen's gold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_test: Option<String>,
    /// A script that exits non-zero on the buggy tree and 0 on the fixed one (reproduce's gold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_script: Option<String>,
    /// Fields this schema does not know, kept so rows round-trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Task {
    /// The gold files, in order, without duplicates.
    pub fn gold_files(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for loc in &self.gold_locations {
            let file = loc
                .split_once(':')
                .map_or(loc.as_str(), |(f, _)| f)
                .to_string();
            if !out.contains(&file) {
                out.push(file);
            }
        }
        out
    }

    /// The gold functions as `path:qualname`.
    pub fn gold_functions(&self) -> Vec<String> {
        self.gold_locations
            .iter()
            .filter(|l| l.contains(':'))
            .cloned()
            .collect()
    }

    /// The test ids a grading runs: FAIL_TO_PASS then PASS_TO_PASS.
    pub fn test_ids(&self) -> Vec<String> {
        self.FAIL_TO_PASS
            .iter()
            .chain(&self.PASS_TO_PASS)
            .cloned()
            .collect()
    }

    /// Checks what this task's skill needs, after filling derived fields.
    pub fn validate(&mut self) -> Result<()> {
        if self.instance_id.trim().is_empty() {
            bail!("empty instance_id");
        }
        if self.gold_locations.is_empty() && !self.patch.is_empty() {
            self.gold_locations = crate::skills::patch::files_of_diff(&self.patch);
        }
        match self.skill {
            Skill::Localize => {
                if self.gold_locations.is_empty() {
                    bail!("localize task without gold_locations or patch");
                }
            }
            Skill::Edit => {
                if self.FAIL_TO_PASS.is_empty() {
                    bail!("edit task without FAIL_TO_PASS");
                }
                if self.env.is_none() {
                    bail!("edit task without env");
                }
            }
            Skill::Testgen | Skill::Reproduce => {
                if self.patch.is_empty() {
                    bail!("{} task without patch", self.skill);
                }
                if self.env.is_none() {
                    bail!("{} task without env", self.skill);
                }
            }
            Skill::Review => {
                if self.review.is_none() {
                    bail!("review task without review");
                }
            }
        }
        Ok(())
    }
}

/// What `load_tasks` does with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadLine {
    /// Report it and go on.
    Skip,
    /// Fail the load (before any work starts), listing every bad line.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads a JSONL file of tasks. Blank lines are ignored; a malformed line is reported with its
/// number and skipped, or fails the whole load with `BadLine::Refuse`.
pub fn load_tasks(path: &Path, on_error: BadLine) -> Result<(Vec<Task>, Vec<LineError>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (tasks, errors) = parse_tasks(&text);
    if on_error == BadLine::Refuse && !errors.is_empty() {
        let list: Vec<String> = errors.iter().take(20).map(|e| e.to_string()).collect();
        bail!(
            "{}: {} malformed line(s): {}",
            path.display(),
            errors.len(),
            list.join("; ")
        );
    }
    Ok((tasks, errors))
}

/// Parses JSONL text; see `load_tasks`.
pub fn parse_tasks(text: &str) -> (Vec<Task>, Vec<LineError>) {
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Task>(line)
            .map_err(|e| e.to_string())
            .and_then(|mut t| match t.validate() {
                Ok(()) => Ok(t),
                Err(e) => Err(format!("{}: {e}", t.instance_id)),
            });
        match parsed {
            Ok(t) => tasks.push(t),
            Err(message) => errors.push(LineError {
                line: i + 1,
                message,
            }),
        }
    }
    (tasks, errors)
}

/// Writes tasks as JSONL.
pub fn write_tasks(path: &Path, tasks: &[Task]) -> Result<()> {
    let mut out = String::new();
    for t in tasks {
        out.push_str(&serde_json::to_string(t)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// SWE-bench stores test lists as JSON strings (`"[\"a\", \"b\"]"`); others as lists.
fn list_or_json_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                other => Err(D::Error::custom(format!(
                    "expected a string in the list, got {other}"
                ))),
            })
            .collect(),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        serde_json::Value::String(s) => serde_json::from_str::<Vec<String>>(&s)
            .map_err(|e| D::Error::custom(format!("a string that should hold a JSON list: {e}"))),
        other => Err(D::Error::custom(format!(
            "expected a list or a JSON string, got {other}"
        ))),
    }
}

/// `version` is "0.12" in SWE-bench and sometimes a number elsewhere.
fn opt_scalar_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}
