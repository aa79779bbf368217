//! The grader: source cache, fresh workspaces, test and script runs in the sandbox, and a pool
//! of workers for batches.

use super::patch::{apply_edits, parse_unified_diff, FileEdit, HunkLine};
use super::task::{Skill, Source, Task};
use super::staging::{make_world_readable, set_mode, stage_tools_bin, unpack_source, world_readable_path};
use super::{Outcome, Reason};
use crate::sandbox::{copy_tree, Exit, Job, Limits, Mount, RunOutput, Sandbox, SandboxConfig};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

const HARNESS_PY: &str = include_str!("harness/atomrl_harness.py");
const SITECUSTOMIZE_PY: &str = include_str!("harness/sitecustomize.py");
const HARNESS_DIR: &str = "/opt/atomrl/harness";
const PYDEPS_DIR: &str = "/opt/atomrl/pydeps";
const REPORT_DIR: &str = "/opt/atomrl/report";
const TOOLS_BIN_DIR: &str = "/opt/atomrl/bin";

#[derive(Debug, Clone)]
pub struct GraderConfig {
    /// Holds `sdists/` (fetched source distributions), `trees/` (unpacked) and `pydeps/`
    /// (pytest and its dependencies).
    pub cache_dir: PathBuf,
    /// Gradings run at once in `grade_batch`.
    pub workers: usize,
    /// The Python interpreter inside the sandbox.
    pub python: String,
    pub sandbox: SandboxConfig,
    /// Context lines a diff hunk may lose and still apply.
    pub fuzz: usize,
    /// Overrides every task's limits.
    pub limits: Option<Limits>,
}

/// `$ATOMRL_CACHE`, else `.cache` in the working directory if it exists, else the crate's.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ATOMRL_CACHE") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(".cache");
    if local.join("pydeps").is_dir() || local.join("sdists").is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache")
}

impl Default for GraderConfig {
    fn default() -> Self {
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        GraderConfig {
            cache_dir: default_cache_dir(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            python: python.into(),
            sandbox: SandboxConfig::default(),
            fuzz: 2,
            limits: None,
        }
    }
}

/// Milliseconds spent in each phase of one grading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Copying trees and applying patches.
    pub prepare_ms: f64,
    /// Inside the sandbox.
    pub run_ms: f64,
    pub total_ms: f64,
    /// Sandbox runs.
    pub runs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub reward: f32,
    /// One of the `Reason` names (`pass`, `format`, `tests_failed`, ...).
    pub reason: String,
    /// A short human-readable explanation.
    pub detail: String,
    /// Extra measurements (localize: file/function F1 and Acc@k).
    pub metrics: BTreeMap<String, f32>,
    pub timings: Timings,
}

impl Grade {
    pub fn is_infra_error(&self) -> bool {
        self.reason == Reason::Infra.as_str()
    }
}

/// Which version of the code a workspace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Source + bug_patch + test_patch.
    Buggy,
    /// Buggy + patch.
    Fixed,
}

/// A fresh copy of a tree, removed on drop.
pub(crate) struct Workspace {
    pub path: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What one pytest run reported.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// nodeid → passed | failed | error | skipped | xfailed | xpassed.
    pub outcomes: HashMap<String, String>,
    pub messages: HashMap<String, String>,
    pub collect_errors: Vec<String>,
    /// nodeid → "path:line" of each package function the test called (trace runs only).
    pub calls: HashMap<String, Vec<String>>,
    /// The harness wrote a report with our nonce.
    pub complete: bool,
}

impl TestReport {
    pub fn passed(&self, id: &str) -> bool {
        matches!(
            self.outcomes.get(id).map(String::as_str),
            Some("passed" | "xfailed")
        )
    }
    pub fn failed(&self, id: &str) -> bool {
        matches!(
            self.outcomes.get(id).map(String::as_str),
            Some("failed" | "error")
        )
    }
}

#[derive(Deserialize)]
struct RawReport {
    nonce: String,
    tests: HashMap<String, String>,
    #[serde(default)]
    messages: HashMap<String, String>,
    #[serde(default)]
    collect_errors: Vec<serde_json::Value>,
    #[serde(default)]
    calls: HashMap<String, Vec<String>>,
}

/// A source unpacked at most once per grader; the error is kept as text so it can be cloned.
type UnpackOnce = OnceLock<std::result::Result<PathBuf, String>>;

pub struct Grader {
    cfg: GraderConfig,
    sandbox: Sandbox,
    pool: rayon::ThreadPool,
    runtime: tempfile::TempDir,
    harness: PathBuf,
    pydeps: PathBuf,
    /// `python` and `pytest` commands for shell runs (`run_command`).
    tools_bin: PathBuf,
    trees: Mutex<HashMap<Source, Arc<UnpackOnce>>>,
    counter: AtomicU64,
}

impl Grader {
    /// Checks the sandbox and stages the harness; fails if bwrap cannot run (see `Sandbox::new`).
    pub fn new(cfg: GraderConfig) -> Result<Self> {
        let sandbox = Sandbox::new(cfg.sandbox.clone())?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers.max(1))
            .thread_name(|i| format!("grader-{i}"))
            .build()?;
        let runtime = tempfile::Builder::new()
            .prefix("atomrl-grader-")
            .tempdir()?;
        set_mode(runtime.path(), 0o755)?;
        let harness = runtime.path().join("harness");
        std::fs::create_dir_all(&harness)?;
        std::fs::write(harness.join("atomrl_harness.py"), HARNESS_PY)?;
        std::fs::write(harness.join("sitecustomize.py"), SITECUSTOMIZE_PY)?;
        set_mode(&harness, 0o755)?;
        let tools_bin = runtime.path().join("bin");
        stage_tools_bin(&tools_bin, &cfg.python)?;
        // The sandbox may run as an unprivileged uid that cannot reach the cache (under /root,
        // say): stage a readable copy of the Python dependencies then.
        let cached = cfg.cache_dir.join("pydeps");
        let pydeps = if !cached.is_dir() {
            let empty = runtime.path().join("pydeps");
            std::fs::create_dir_all(&empty)?;
            empty
        } else if world_readable_path(&cached) {
            cached
        } else {
            let staged = runtime.path().join("pydeps");
            copy_tree(&cached, &staged)?;
            make_world_readable(&staged)?;
            staged
        };
        Ok(Grader {
            cfg,
            sandbox,
            pool,
            runtime,
            harness,
            pydeps,
            tools_bin,
            trees: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &GraderConfig {
        &self.cfg
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Fetches (from the cache) and unpacks every source the tasks need, and checks that pytest
    /// is installed if any task runs tests: call it once before grading to surface
    /// infrastructure problems as one clear error.
    pub fn prepare(&self, tasks: &[Task]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut needs_pytest = false;
        for t in tasks {
            if let Some(env) = &t.env {
                needs_pytest |= matches!(t.skill, Skill::Edit | Skill::Testgen);
                if seen.insert(env.source.clone()) {
                    self.pristine(&env.source)
                        .with_context(|| format!("sources for {}", t.instance_id))?;
                }
            }
        }
        if needs_pytest
            && !self.pydeps.join("pytest").is_dir()
            && !self.pydeps.join("_pytest").is_dir()
        {
            let probe = std::process::Command::new(&self.cfg.python)
                .args(["-c", "import pytest"])
                .output();
            if !probe.is_ok_and(|o| o.status.success()) {
                bail!(
                    "pytest is not installed for the sandbox: run scripts/install-sandbox-deps.sh \
                     (it installs it into {})",
                    self.cfg.cache_dir.join("pydeps").display()
                );
            }
        }
        Ok(())
    }

    /// Grades one completion. Never panics; bad output of any kind is reward 0 with a reason,
    /// and an infrastructure failure is reward 0 with reason `infra` (see `try_grade`).
    pub fn grade(&self, task: &Task, completion: &str) -> Grade {
        self.pool.install(|| self.grade_here(task, completion))
    }

    /// Like `grade`, but an infrastructure failure is an error.
    pub fn try_grade(&self, task: &Task, completion: &str) -> Result<Grade> {
        let g = self.grade(task, completion);
        if g.is_infra_error() {
            bail!("{}: {}", task.instance_id, g.detail);
        }
        Ok(g)
    }

    /// Grades many completions on the worker pool; results are in input order.
    pub fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        self.pool.install(|| {
            items
                .par_iter()
                .map(|(t, c)| self.grade_here(t, c))
                .collect()
        })
    }

    fn grade_here(&self, task: &Task, completion: &str) -> Grade {
        let start = Instant::now();
        let mut timings = Timings::default();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut g = Grading {
                grader: self,
                task,
                timings: &mut timings,
            };
            match task.skill {
                Skill::Localize => Ok(super::localize::grade(task, completion)),
                Skill::Review => Ok(super::review::grade(task, completion)),
                Skill::Edit => super::edit::grade(&mut g, completion),
                Skill::Testgen => super::testgen::grade(&mut g, completion),
                Skill::Reproduce => super::reproduce::grade(&mut g, completion),
            }
        }));
        let outcome = match result {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::fail(Reason::Infra, format!("{e:#}")),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome::fail(Reason::Internal, format!("grader panicked: {msg}"))
            }
        };
        timings.total_ms = start.elapsed().as_secs_f64() * 1e3;
        Grade {
            reward: outcome.reward,
            reason: outcome.reason.as_str().to_string(),
            detail: super::clip(&outcome.detail, 400),
            metrics: outcome.metrics,
            timings,
        }
    }

    /// Adds the functions the gold patch changes (`path:qualname`) to `gold_locations`, read from
    /// the buggy tree; `load_tasks` can only derive the files. Tasks that already name functions,
    /// or have no env, are left alone.
    pub fn derive_gold_functions(&self, task: &mut Task) -> Result<()> {
        if task.env.is_none() || task.patch.is_empty() || !task.gold_functions().is_empty() {
            return Ok(());
        }
        let ws = self.workspace(task, Variant::Buggy)?;
        for edit in parse_unified_diff(&task.patch) {
            let FileEdit::Diff { old_path: Some(path), hunks, .. } = edit else { continue };
            let Ok(text) = std::fs::read_to_string(ws.path.join(&path)) else { continue };
            let funcs = super::pysrc::functions(&text);
            for h in &hunks {
                let mut line = h.old_start.max(1);
                for l in &h.lines {
                    let changed = match l {
                        HunkLine::Context(_) => false,
                        HunkLine::Remove(_) | HunkLine::Add(_) => true,
                    };
                    if changed {
                        if let Some(f) = super::pysrc::location_at_line(&funcs, line) {
                            let loc = format!("{path}:{}", f.qualname);
                            if !task.gold_locations.contains(&loc) {
                                task.gold_locations.push(loc);
                            }
                        }
                    }
                    if !matches!(l, HunkLine::Add(_)) {
                        line += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The unpacked, unmodified source tree.
    pub fn pristine(&self, source: &Source) -> Result<PathBuf> {
        let cell = {
            let mut map = self.trees.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(source.clone()).or_default().clone()
        };
        cell.get_or_init(|| {
            unpack_source(&self.cfg.cache_dir, source).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
    }

    /// A fresh workspace with the given variant of the task's code.
    pub(crate) fn workspace(&self, task: &Task, variant: Variant) -> Result<Workspace> {
        let env = task.env.as_ref().context("task has no env")?;
        let src = self.pristine(&env.source)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ws = Workspace {
            path: self.runtime.path().join(format!("ws{n}")),
        };
        copy_tree(&src, &ws.path)?;
        for (name, diff) in [
            ("bug_patch", &task.bug_patch),
            ("test_patch", &task.test_patch),
        ] {
            if !diff.trim().is_empty() {
                apply_edits(&ws.path, &parse_unified_diff(diff), self.cfg.fuzz)
                    .map_err(|e| anyhow!("{}: {name} does not apply: {e}", task.instance_id))?;
            }
        }
        if variant == Variant::Fixed {
            apply_edits(&ws.path, &parse_unified_diff(&task.patch), self.cfg.fuzz)
                .map_err(|e| anyhow!("{}: the gold patch does not apply: {e}", task.instance_id))?;
        }
        Ok(ws)
    }

    pub(crate) fn limits(&self, task: &Task) -> Limits {
        self.cfg.limits.clone().unwrap_or_else(|| {
            task.env
                .as_ref()
                .map(|e| e.limits.clone())
                .unwrap_or_default()
        })
    }

    fn env_vars(&self, task: &Task, ws: &Path, limits: &Limits) -> Vec<(String, String)> {
        let ws_in = self.sandbox.workspace_in(ws);
        let mut pp = vec![
            self.mount_path(&self.harness, HARNESS_DIR),
            self.mount_path(&self.pydeps, PYDEPS_DIR),
        ];
        if let Some(env) = &task.env {
            for p in &env.pythonpath {
                pp.push(ws_in.join(p).display().to_string());
            }
        }
        vec![
            ("PYTHONPATH".into(), pp.join(":")),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PYTHONHASHSEED".into(), "0".into()),
            ("PYTEST_DISABLE_PLUGIN_AUTOLOAD".into(), "1".into()),
            ("ATOMRL_NPROC".into(), limits.procs.to_string()),
        ]
    }

    fn mount_path(&self, host: &Path, dest: &str) -> String {
        let m = Mount {
            host: host.to_path_buf(),
            dest: dest.into(),
            writable: false,
        };
        self.sandbox.path_in(&m).display().to_string()
    }

    fn mounts(&self, report: Option<&Path>) -> Vec<Mount> {
        let mut m = vec![
            Mount {
                host: self.harness.clone(),
                dest: HARNESS_DIR.into(),
                writable: false,
            },
            Mount {
                host: self.pydeps.clone(),
                dest: PYDEPS_DIR.into(),
                writable: false,
            },
        ];
        if let Some(r) = report {
            m.push(Mount {
                host: r.to_path_buf(),
                dest: REPORT_DIR.into(),
                writable: true,
            });
        }
        m
    }

    /// Runs the given pytest ids in a workspace. `trace_root` (a path inside the workspace)
    /// records which functions under it each test calls.
    pub(crate) fn run_tests(
        &self,
        task: &Task,
        ws: &Workspace,
        ids: &[String],
        trace_root: Option<&str>,
        timings: &mut Timings,
    ) -> Result<(TestReport, RunOutput)> {
        let limits = self.limits(task);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let report_dir = self.runtime.path().join(format!("report{n}"));
        std::fs::create_dir_all(&report_dir)?;
        let _cleanup = Workspace {
            path: report_dir.clone(),
        };
        let report_in = self.mount_path(&report_dir, REPORT_DIR);
        let nonce = nonce();
        let mut env = self.env_vars(task, &ws.path, &limits);
        env.push(("ATOMRL_NONCE".into(), nonce.clone()));
        env.push(("ATOMRL_REPORT".into(), format!("{report_in}/report.jsonl")));
        let ws_in = self.sandbox.workspace_in(&ws.path);
        if let Some(root) = trace_root {
            env.push((
                "ATOMRL_TRACE_ROOT".into(),
                ws_in.join(root).display().to_string(),
            ));
        }
        let mut argv: Vec<String> = match task.env.as_ref().and_then(|e| e.test_cmd.clone()) {
            Some(cmd) if !cmd.is_empty() => cmd,
            _ => vec!["python".into(), "-m".into(), "pytest".into(), "-q".into()],
        };
        if argv[0] == "python" || argv[0] == "python3" {
            argv[0] = self.cfg.python.clone();
        }
        argv.extend(
            [
                "-p",
                "no:cacheprovider",
                "-p",
                "atomrl_harness",
                "-o",
                "addopts=",
                "-W",
                "ignore::DeprecationWarning",
            ]
            .map(String::from),
        );
        argv.push(format!("--rootdir={}", ws_in.display()));
        argv.extend(ids.iter().cloned());
        let mounts = self.mounts(Some(&report_dir));
        let out = self.run(ws, &argv, &env, &mounts, &limits, timings)?;
        let mut report = TestReport::default();
        if let Ok(text) = std::fs::read_to_string(report_dir.join("report.jsonl")) {
            for line in text.lines() {
                if let Ok(raw) = serde_json::from_str::<RawReport>(line) {
                    if raw.nonce == nonce {
                        report = TestReport {
                            outcomes: raw.tests,
                            messages: raw.messages,
                            collect_errors: raw
                                .collect_errors
                                .iter()
                                .map(|v| {
                                    v.get("nodeid")
                                        .and_then(|s| s.as_str())
                                        .unwrap_or("")
                                        .to_string()
                                })
                                .collect(),
                            calls: raw.calls,
                            complete: true,
                        };
                    }
                }
            }
        }
        Ok((report, out))
    }

    /// Runs a standalone script (a path relative to the workspace) with the harness runner.
    pub(crate) fn run_script(
        &self,
        task: &Task,
        ws: &Workspace,
        script: &str,
        timings: &mut Timings,
    ) -> Result<RunOutput> {
        let limits = self.limits(task);
        let env = self.env_vars(task, &ws.path, &limits);
        let argv: Vec<String> = vec![
            self.cfg.python.clone(),
            "-B".into(),
            "-m".into(),
            "atomrl_harness".into(),
            "run".into(),
            script.into(),
        ];
        self.run(ws, &argv, &env, &self.mounts(None), &limits, timings)
    }

    /// Runs `sh -c COMMAND` in a workspace (the working directory is its root) with the task's
    /// environment and limits, the wall-clock limit capped at `wall_s`. `python` and `pytest`
    /// are on PATH, and the task's packages import as they do in grading.
    pub(crate) fn run_command(
        &self,
        task: &Task,
        ws: &Workspace,
        command: &str,
        wall_s: f64,
        timings: &mut Timings,
    ) -> Result<RunOutput> {
        let mut limits = self.limits(task);
        limits.time_s = limits.time_s.min(wall_s.max(0.001));
        let mut env = self.env_vars(task, &ws.path, &limits);
        env.push((
            "PATH".into(),
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                self.mount_path(&self.tools_bin, TOOLS_BIN_DIR)
            ),
        ));
        let mut mounts = self.mounts(None);
        mounts.push(Mount {
            host: self.tools_bin.clone(),
            dest: TOOLS_BIN_DIR.into(),
            writable: false,
        });
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), command.into()];
        self.run(ws, &argv, &env, &mounts, &limits, timings)
    }

    fn run(
        &self,
        ws: &Workspace,
        argv: &[String],
        env: &[(String, String)],
        mounts: &[Mount],
        limits: &Limits,
        timings: &mut Timings,
    ) -> Result<RunOutput> {
        let job = Job {
            workspace: &ws.path,
            argv,
            env,
            mounts,
            limits,
        };
        let start = Instant::now();
        let out = self.sandbox.run(&job);
        timings.run_ms += start.elapsed().as_secs_f64() * 1e3;
        timings.runs += 1;
        out
    }
}

/// One grading in progress: what the skill graders use to build workspaces and run things.
pub(crate) struct Grading<'a> {
    pub grader: &'a Grader,
    pub task: &'a Task,
    pub timings: &'a mut Timings,
}

impl Grading<'_> {
    pub fn workspace(&mut self, variant: Variant) -> Result<Workspace> {
        let start = Instant::now();
        let ws = self.grader.workspace(self.task, variant);
        self.timings.prepare_ms += start.elapsed().as_secs_f64() * 1e3;
        ws
    }

    pub fn run_tests(&mut self, ws: &Workspace, ids: &[String]) -> Result<(TestReport, RunOutput)> {
        self.grader
            .run_tests(self.task, ws, ids, None, self.timings)
    }

    pub fn run_script(&mut self, ws: &Workspace, script: &str) -> Result<RunOutput> {
        self.grader.run_script(self.task, ws, script, self.timings)
    }

    /// Writes a file into a workspace (outside the sandbox: the path is checked).
    pub fn write(&mut self, ws: &Workspace, rel: &str, text: &str) -> Result<()> {
        let start = Instant::now();
        let path = super::patch::safe_join(&ws.path, rel).map_err(|e| anyhow!("{e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
        self.timings.prepare_ms += start.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }
}

/// The reason for a run that ended without a usable result, if it did.
pub(crate) fn abnormal_end(out: &RunOutput) -> Option<Outcome> {
    match out.exit {
        Exit::Timeout => Some(Outcome::fail(
            Reason::Timeout,
            "killed at the wall-clock limit",
        )),
        Exit::Signal(s) => Some(Outcome::fail(
            Reason::Crash,
            format!("killed by signal {s}"),
        )),
        _ => None,
    }
}

pub(super) fn nonce() -> String {
    let mut buf = [0u8; 16];
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got != buf.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
