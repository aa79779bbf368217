//! One episode's tools: a fresh copy of the task's buggy repository, and `view`, `search`,
//! `list`, `run`, `edit` and `submit` acting on it. Every call ends in an [`Observation`]
//! (failures included, as text the model can act on), cut to a configured length; `run` goes
//! through the grader's sandbox, the other tools act on the copy directly, through checked
//! paths. [`Toolbox::diff`] is the episode's change to the repository as a unified diff.

pub use super::call::{parse_tool_call, CallParse, ToolCall, TOOLS_DOC, TOOL_NAMES};

use super::support::{
    clip_chars, clip_end, clip_middle, list_dir, looks_numbered, one_line, read_file, walk,
    MAX_SEARCH_FILE_BYTES,
};
use crate::sandbox::{Exit, WORKSPACE};
use crate::skills::grader::{Variant, Workspace};
use crate::skills::patch::{parse_unified_diff, safe_join, unified_diff, FileEdit};
use crate::skills::{Grader, Task, Timings};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Limits of the tools' output and runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolConfig {
    /// Characters of an observation kept; the rest is replaced by a `[... truncated N
    /// characters]` marker.
    pub observation_chars: usize,
    /// Wall-clock limit of one `run` command in seconds (the task's own limit still applies
    /// when it is lower).
    pub run_timeout_s: f64,
    /// Lines one `view` shows at most.
    pub max_view_lines: usize,
    /// Matches one `search` lists at most.
    pub max_search_hits: usize,
}

impl Default for ToolConfig {
    fn default() -> Self {
        ToolConfig {
            observation_chars: 2000,
            run_timeout_s: 10.0,
            max_view_lines: 80,
            max_search_hits: 30,
        }
    }
}

/// What a tool call gave back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// What the model reads next.
    pub text: String,
    /// The tool did what was asked. For `run`: the command finished (whatever its exit
    /// status); false when it timed out, was killed or could not start.
    pub ok: bool,
}

impl Observation {
    fn ok(text: String) -> Self {
        Observation { text, ok: true }
    }
    fn fail(text: String) -> Self {
        Observation { text, ok: false }
    }
}

/// One episode's workspace and tools; the workspace is removed on drop.
pub struct Toolbox<'g> {
    grader: &'g Grader,
    task: &'g Task,
    cfg: ToolConfig,
    ws: Workspace,
    /// The unpacked source the buggy tree was made from.
    pristine: PathBuf,
    /// Buggy contents of the files the bug and test patches touch (None: absent).
    patched: BTreeMap<String, Option<Vec<u8>>>,
    timings: Timings,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Toolbox<'static>>();
};

impl<'g> Toolbox<'g> {
    /// A fresh copy of the task's buggy repository.
    pub fn open(grader: &'g Grader, task: &'g Task, cfg: &ToolConfig) -> anyhow::Result<Self> {
        let start = Instant::now();
        let env = task
            .env
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{}: task has no env", task.instance_id))?;
        let pristine = grader.pristine(&env.source)?;
        let ws = grader.workspace(task, Variant::Buggy)?;
        let mut patched = BTreeMap::new();
        for diff in [&task.bug_patch, &task.test_patch] {
            for edit in parse_unified_diff(diff) {
                let FileEdit::Diff {
                    old_path, new_path, ..
                } = edit
                else {
                    continue;
                };
                for rel in [old_path, new_path].into_iter().flatten() {
                    if let Ok(full) = safe_join(&ws.path, &rel) {
                        patched.insert(rel, std::fs::read(full).ok());
                    }
                }
            }
        }
        let timings = Timings {
            prepare_ms: start.elapsed().as_secs_f64() * 1e3,
            ..Timings::default()
        };
        Ok(Toolbox {
            grader,
            task,
            cfg: cfg.clone(),
            ws,
            pristine,
            patched,
            timings,
        })
    }

    pub fn tool_names() -> [&'static str; 6] {
        TOOL_NAMES
    }

    /// The workspace on the host.
    pub fn root(&self) -> &Path {
        &self.ws.path
    }

    pub fn config(&self) -> &ToolConfig {
        &self.cfg
    }

    /// Time spent preparing the workspace and in sandbox runs so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Carries out one call. Never fails: what goes wrong is said in the observation.
    pub fn execute(&mut self, call: &ToolCall) -> Observation {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(call)));
        let obs = match result {
            Ok(Ok(obs)) => obs,
            Ok(Err(msg)) => Observation::fail(msg),
            Err(_) => Observation::fail(format!("{}: internal error in the tool", call.name())),
        };
        Observation {
            text: clip_end(&obs.text, self.cfg.observation_chars),
            ok: obs.ok,
        }
    }

    fn dispatch(&mut self, call: &ToolCall) -> Result<Observation, String> {
        match call {
            ToolCall::View { path, start, end } => {
                self.view(path, *start, *end).map(Observation::ok)
            }
            ToolCall::Search { pattern, path } => {
                self.search(pattern, path.as_deref()).map(Observation::ok)
            }
            ToolCall::List { path } => self.list(path.as_deref()).map(Observation::ok),
            ToolCall::Run { command } => Ok(self.run(command)),
            ToolCall::Edit {
                path,
                search,
                replace,
            } => self.edit(path, search, replace).map(Observation::ok),
            ToolCall::Submit { .. } => Ok(Observation::ok("submitted".into())),
        }
    }

    /// A path the model gave, as a clean relative name and a host path inside the workspace.
    /// `/workspace/...` (what the sandbox shows) is accepted; "" and "." are the root.
    fn resolve(&self, given: &str) -> Result<(String, PathBuf), String> {
        let mut rel = given.trim();
        if let Some(rest) = rel.strip_prefix(WORKSPACE) {
            if rest.is_empty() || rest.starts_with('/') {
                rel = rest.trim_start_matches('/');
            }
        }
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() || rel == "." {
            return Ok((".".into(), self.ws.path.clone()));
        }
        let full = safe_join(&self.ws.path, rel).map_err(|_| {
            format!("{given}: not allowed: paths must be relative to the repository root and stay inside it (no `..`, no absolute paths, no symlinks)")
        })?;
        let name = full
            .strip_prefix(&self.ws.path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| rel.to_string());
        Ok((if name.is_empty() { ".".into() } else { name }, full))
    }

    fn read_text(&self, name: &str, full: &Path) -> Result<String, String> {
        if full.is_dir() {
            return Err(format!("{name} is a directory: use list to see it"));
        }
        let bytes = std::fs::read(full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{name}: no such file"),
            _ => format!("{name}: cannot read: {e}"),
        })?;
        match String::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => Err(format!("{name} is not a text file")),
        }
    }

    fn view(&self, path: &str, start: Option<usize>, end: Option<usize>) -> Result<String, String> {
        let (name, full) = self.resolve(path)?;
        let text = self.read_text(&name, &full)?;
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len();
        if n == 0 {
            return Ok(format!("{name} is empty"));
        }
        let max = self.cfg.max_view_lines.max(1);
        let start = start.unwrap_or(1);
        if start > n {
            return Err(format!(
                "{name} has {n} lines: start {start} is past the end"
            ));
        }
        let want_end = end.unwrap_or(start + max - 1);
        if want_end < start {
            return Err(format!("end {want_end} is before start {start}"));
        }
        let end = want_end.min(n).min(start + max - 1);
        // Fit whole lines into the observation, leaving room for the closing note.
        let budget = self.cfg.observation_chars.saturating_sub(100);
        let mut out = String::new();
        let mut shown = start - 1;
        for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
            let row = format!("{:>4}| {line}\n", i + 1);
            if shown >= start && out.chars().count() + row.chars().count() > budget {
                break;
            }
            out.push_str(&row);
            shown = i + 1;
        }
        if start > 1 || shown < n {
            out.push_str(&format!("[{name}: lines {start}-{shown} of {n}"));
            if shown < n {
                out.push_str(&format!("; view with start={} for more", shown + 1));
            }
            out.push(']');
        }
        Ok(out)
    }

    fn search(&self, pattern: &str, path: Option<&str>) -> Result<String, String> {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                format!(
                    "invalid regular expression {pattern:?}: {}",
                    one_line(&e.to_string())
                )
            })?;
        let (name, full) = self.resolve(path.unwrap_or(""))?;
        let mut files = Vec::new();
        if full.is_dir() {
            walk(&full, &mut files, true);
        } else if full.is_file() {
            files.push(full.clone());
        } else {
            return Err(format!("{name}: no such file or directory"));
        }
        files.sort();
        let (mut hits, mut total) = (Vec::new(), 0usize);
        for file in &files {
            let Ok(md) = std::fs::metadata(file) else {
                continue;
            };
            if md.len() > MAX_SEARCH_FILE_BYTES {
                continue;
            }
            let Ok(bytes) = std::fs::read(file) else {
                continue;
            };
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if text.contains('\0') {
                continue;
            }
            let rel = file
                .strip_prefix(&self.ws.path)
                .unwrap_or(file)
                .display()
                .to_string();
            for (i, line) in text.lines().enumerate() {
                if re.is_match(line) {
                    total += 1;
                    if hits.len() < self.cfg.max_search_hits {
                        hits.push(format!("{rel}:{}: {}", i + 1, clip_chars(line.trim(), 200)));
                    }
                }
            }
        }
        if total == 0 {
            return Ok(format!("no matches for {pattern:?} in {name}"));
        }
        let mut out = hits.join("\n");
        if total > hits.len() {
            out.push_str(&format!(
                "\n[{} of {total} matches shown; narrow the pattern or the path]",
                hits.len()
            ));
        }
        Ok(out)
    }

    fn list(&self, path: Option<&str>) -> Result<String, String> {
        let (name, full) = self.resolve(path.unwrap_or(""))?;
        if full.is_file() {
            return Err(format!("{name} is a file: use view to read it"));
        }
        if !full.is_dir() {
            return Err(format!("{name}: no such directory"));
        }
        let mut out = String::new();
        list_dir(&full, 0, &mut out);
        if out.is_empty() {
            return Ok(format!("{name} is empty"));
        }
        Ok(format!("{name}/\n{out}").trim_end().to_string())
    }

    fn run(&mut self, command: &str) -> Observation {
        let wall = self.cfg.run_timeout_s;
        let merged = format!("exec 2>&1; {command}");
        let out =
            match self
                .grader
                .run_command(self.task, &self.ws, &merged, wall, &mut self.timings)
            {
                Ok(out) => out,
                Err(e) => return Observation::fail(format!("run: the sandbox failed: {e:#}")),
            };
        let (status, ok) = match out.exit {
            Exit::Code(c) => (format!("exit code {c}"), true),
            Exit::Timeout => (
                format!(
                    "killed: the command ran past the time limit of {} s",
                    self.grader.limits(self.task).time_s.min(wall)
                ),
                false,
            ),
            Exit::Signal(s) => (format!("killed by signal {s}"), false),
        };
        let mut output = out.stdout;
        if !out.stderr.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&out.stderr);
        }
        if output.trim().is_empty() {
            output = "(no output)".into();
        }
        let room = self
            .cfg
            .observation_chars
            .saturating_sub(status.chars().count() + 1);
        Observation {
            text: format!("{status}\n{}", clip_middle(output.trim_end(), room)),
            ok,
        }
    }

    fn edit(&mut self, path: &str, search: &str, replace: &str) -> Result<String, String> {
        let (name, full) = self.resolve(path)?;
        if name == "." {
            return Err("edit needs a file path".into());
        }
        let exists = full.exists();
        if search.is_empty() {
            if exists && !self.read_text(&name, &full)?.is_empty() {
                return Err(format!(
                    "{name} already exists: give the text to replace in \"search\" (an empty search only creates new files)"
                ));
            }
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{name}: {e}"))?;
            }
            std::fs::write(&full, replace).map_err(|e| format!("{name}: cannot write: {e}"))?;
            return Ok(format!(
                "created {name} ({} lines)",
                replace.lines().count()
            ));
        }
        let text = self.read_text(&name, &full)?;
        let count = text.matches(search).count();
        if count != 1 {
            let mut msg = if count == 0 {
                format!("the search text was not found in {name}: copy the lines exactly as they are in the file")
            } else {
                format!("the search text occurs {count} times in {name}: include more lines around it so it occurs once")
            };
            if count == 0 && looks_numbered(search) {
                msg.push_str(" (leave out the line numbers that view shows)");
            }
            return Err(msg);
        }
        let pos = text.find(search).unwrap_or(0);
        let new = format!("{}{replace}{}", &text[..pos], &text[pos + search.len()..]);
        std::fs::write(&full, &new).map_err(|e| format!("{name}: cannot write: {e}"))?;
        let first = text[..pos].matches('\n').count() + 1;
        let changed = replace.lines().count().max(1);
        let lines: Vec<&str> = new.lines().collect();
        let lo = first.saturating_sub(3);
        let hi = (first + changed + 1).min(lines.len()).min(lo + 30);
        let mut out = format!("edited {name}; lines {lo}-{hi} now read:\n", lo = lo + 1);
        for (i, l) in lines.iter().enumerate().take(hi).skip(lo) {
            out.push_str(&format!("{:>4}| {l}\n", i + 1));
        }
        Ok(out.trim_end().to_string())
    }

    /// The unified diff (git style, one section per changed, created or deleted file, sorted by
    /// path) of the workspace against the buggy tree; empty when nothing changed. Caches
    /// (`__pycache__`, `.pytest_cache`, ...), symlinks and binary files are left out.
    pub fn diff(&self) -> anyhow::Result<String> {
        let mut now = Vec::new();
        walk(&self.ws.path, &mut now, false);
        let mut before = Vec::new();
        walk(&self.pristine, &mut before, false);
        let rel = |root: &Path, p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        let mut paths: BTreeSet<String> = now.iter().map(|p| rel(&self.ws.path, p)).collect();
        paths.extend(before.iter().map(|p| rel(&self.pristine, p)));
        paths.extend(self.patched.keys().cloned());
        let mut out = String::new();
        for path in paths {
            let old = match self.patched.get(&path) {
                Some(b) => b.clone(),
                None => read_file(&self.pristine.join(&path))?,
            };
            let new = read_file(&self.ws.path.join(&path))?;
            if old == new {
                continue;
            }
            let text = |b: &Option<Vec<u8>>| match b {
                None => Some(String::new()),
                Some(b) => String::from_utf8(b.clone()).ok(),
            };
            let (Some(old_text), Some(new_text)) = (text(&old), text(&new)) else {
                continue; // binary
            };
            let d = unified_diff(&path, &old_text, &new_text);
            if d.is_empty() {
                continue;
            }
            out.push_str(&match (&old, &new) {
                (None, _) => d.replacen(
                    &format!("\n--- a/{path}\n"),
                    "\nnew file mode 100644\n--- /dev/null\n",
                    1,
                ),
                (_, None) => d
                    .replacen(&format!("\n+++ b/{path}\n"), "\n+++ /dev/null\n", 1)
                    .replacen("\n--- a/", "\ndeleted file mode 100644\n--- a/", 1),
                _ => d,
            });
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let c: ToolConfig = toml::from_str("max_view_lines = 40").unwrap();
        assert_eq!(c.max_view_lines, 40);
        assert_eq!(c.observation_chars, 2000);
        assert_eq!(c.run_timeout_s, 10.0);
        assert_eq!(c.max_search_hits, 30);
        assert!(toml::from_str::<ToolConfig>("max_lines = 40").is_err());
    }

    #[test]
    fn tool_names_match_the_calls() {
        assert_eq!(
            Toolbox::tool_names(),
            ["view", "search", "list", "run", "edit", "submit"]
        );
    }
}
