//! Finding mutants worth keeping: the package's test suite once with call tracing, the candidate
//! mutations in the functions some passing test covers, and a run of each candidate's covering
//! tests (a mutant is kept iff some of them fail and others still pass).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::{mutate, seed_for, seeded, Candidate, Kept, PackageSpec, SourceFile, SynthConfig};
use crate::sandbox::Limits;
use crate::skills::grader::{TestReport, Variant};
use crate::skills::patch::unified_diff;
use crate::skills::{pysrc, Grader, Task};

/// Steps 1–4 of the synthesis: the package's files and its kept mutants.
pub(super) fn find_mutants(
    grader: &Grader,
    spec: &PackageSpec,
    cfg: &SynthConfig,
    tree: &Path,
    base: &Task,
    pool: &rayon::ThreadPool,
    log: &dyn Fn(&str),
) -> Result<(Vec<SourceFile>, Vec<Kept>)> {
    let (baseline, passing) = run_suite(grader, spec, base, log)?;
    let files = package_files(tree, spec)?;
    let coverage = Coverage::new(&baseline, &passing);
    let queue = candidate_queue(&files, &coverage, spec, cfg, log);
    let kept = keep_mutants(grader, base, &files, &coverage, &passing, &queue, cfg, pool)?;
    log(&format!("{}: kept {} of {} mutants tried", spec.name, kept.1.len(), kept.0));
    Ok((files, kept.1))
}

/// 1. The suite once, with per-test call tracing; returns its report and the passing tests.
fn run_suite(grader: &Grader, spec: &PackageSpec, base: &Task, log: &dyn Fn(&str)) -> Result<(TestReport, BTreeSet<String>)> {
    let mut timings = Default::default();
    let ws = grader.workspace(base, Variant::Buggy)?;
    let (baseline, out) = grader.run_tests(base, &ws, &[], Some(&spec.package_dir), &mut timings)?;
    drop(ws);
    if !baseline.complete {
        bail!("{}: the test suite did not report: {}", spec.name, out.stderr.lines().last().unwrap_or(""));
    }
    let passing: BTreeSet<String> = baseline.outcomes.iter().filter(|(_, o)| *o == "passed").map(|(k, _)| k.clone()).collect();
    log(&format!("{}: {} tests, {} passing ({:.1}s)", spec.name, baseline.outcomes.len(), passing.len(), out.wall.as_secs_f64()));
    Ok((baseline, passing))
}

/// 2. Which passing tests call each function, keyed by (file, line of the call record).
struct Coverage {
    callers: BTreeMap<(String, usize), BTreeSet<String>>,
}

impl Coverage {
    fn new(baseline: &TestReport, passing: &BTreeSet<String>) -> Coverage {
        let mut callers: BTreeMap<(String, usize), BTreeSet<String>> = BTreeMap::new();
        for (test, calls) in baseline.calls.iter().filter(|(t, _)| passing.contains(*t)) {
            for c in calls {
                if let Some((f, l)) = c.rsplit_once(':') {
                    if let Ok(l) = l.parse::<usize>() {
                        callers.entry((f.to_string(), l)).or_default().insert(test.clone());
                    }
                }
            }
        }
        Coverage { callers }
    }

    /// The passing tests that call `f` (recorded at its first line or at its `def`).
    fn tests_of(&self, file: &SourceFile, f: &pysrc::Function) -> BTreeSet<String> {
        let mut t = self.callers.get(&(file.path.clone(), f.start_line)).cloned().unwrap_or_default();
        t.extend(self.callers.get(&(file.path.clone(), f.def_line)).cloned().unwrap_or_default());
        t
    }
}

/// 3. Candidate mutations in covered functions, shuffled and interleaved across functions.
fn candidate_queue(files: &[SourceFile], coverage: &Coverage, spec: &PackageSpec, cfg: &SynthConfig, log: &dyn Fn(&str)) -> Vec<Candidate> {
    let mut rng = seeded(seed_for(cfg.seed, &spec.name));
    let mut per_func: Vec<Vec<Candidate>> = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        for (ki, f) in file.funcs.iter().enumerate() {
            if coverage.tests_of(file, f).is_empty() || f.end_line - f.start_line > 80 {
                continue;
            }
            // Only the function's own body: nested definitions are functions of their own.
            let mut muts: Vec<Candidate> = mutate::mutations_in(&file.text, f.body_start_byte, f.end_byte)
                .into_iter()
                .filter(|m| innermost(&file.funcs, m.start) == Some(ki))
                .map(|m| Candidate { file: fi, func: ki, mutation: m })
                .collect();
            rng.shuffle(&mut muts);
            if !muts.is_empty() {
                per_func.push(muts);
            }
        }
    }
    rng.shuffle(&mut per_func);
    let depth = per_func.iter().map(Vec::len).max().unwrap_or(0);
    let mut queue: Vec<Candidate> = (0..depth).flat_map(|d| per_func.iter().filter_map(move |muts| muts.get(d).cloned())).collect();
    queue.truncate(cfg.max_candidates);
    log(&format!("{}: {} covered functions, {} candidate mutants", spec.name, per_func.len(), queue.len()));
    queue
}

/// 4. Each candidate's covering tests run, in parallel chunks, until `max_mutants` are kept (at
/// most `per_function` per function). Returns how many were tried, and the kept ones.
#[allow(clippy::too_many_arguments)]
fn keep_mutants(
    grader: &Grader,
    base: &Task,
    files: &[SourceFile],
    coverage: &Coverage,
    passing: &BTreeSet<String>,
    queue: &[Candidate],
    cfg: &SynthConfig,
    pool: &rayon::ThreadPool,
) -> Result<(usize, Vec<Kept>)> {
    let mut kept: Vec<Kept> = Vec::new();
    let mut kept_per_func: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut tried = 0;
    for chunk in queue.chunks(cfg.workers.max(1) * 2) {
        if kept.len() >= cfg.max_mutants {
            break;
        }
        let chunk: Vec<&Candidate> = chunk.iter().filter(|c| kept_per_func.get(&(c.file, c.func)).copied().unwrap_or(0) < cfg.per_function).collect();
        tried += chunk.len();
        let results: Vec<Result<Option<Kept>>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|c| {
                    let file = &files[c.file];
                    let tests = coverage.tests_of(file, &file.funcs[c.func]);
                    try_candidate(grader, base, file, c, &tests, passing, cfg.seed)
                })
                .collect()
        });
        for r in results {
            if let Some(k) = r? {
                let key = (k.cand.file, k.cand.func);
                if kept.len() < cfg.max_mutants && kept_per_func.get(&key).copied().unwrap_or(0) < cfg.per_function {
                    *kept_per_func.entry(key).or_default() += 1;
                    kept.push(k);
                }
            }
        }
    }
    Ok((tried, kept))
}

fn innermost(funcs: &[pysrc::Function], byte: usize) -> Option<usize> {
    funcs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.start_byte <= byte && byte < f.end_byte)
        .min_by_key(|(_, f)| f.end_byte - f.start_byte)
        .map(|(i, _)| i)
}

fn package_files(tree: &Path, spec: &PackageSpec) -> Result<Vec<SourceFile>> {
    let root = tree.join(&spec.package_dir);
    let mut paths = Vec::new();
    if root.is_file() {
        paths.push(spec.package_dir.clone());
    } else {
        collect_py(tree, &root, &mut paths)?;
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = p.rsplit('/').next().unwrap_or(&p);
        let is_test = p.split('/').any(|d| d == "tests" || d == "test")
            || name.starts_with("test_")
            || name == "conftest.py";
        if is_test || spec.exclude.contains(&p) {
            continue;
        }
        let text =
            std::fs::read_to_string(tree.join(&p)).with_context(|| format!("reading {p}"))?;
        let funcs = pysrc::functions(&text);
        out.push(SourceFile {
            path: p,
            text,
            funcs,
        });
    }
    Ok(out)
}

fn collect_py(tree: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_py(tree, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "py") {
            out.push(path.strip_prefix(tree)?.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Picks up to `n` items from a sorted set, spread deterministically.
fn pick(set: &BTreeSet<String>, n: usize, seed: u64) -> Vec<String> {
    let mut v: Vec<String> = set.iter().cloned().collect();
    if v.len() > n {
        seeded(seed).shuffle(&mut v);
        v.truncate(n);
        v.sort();
    }
    v
}

fn try_candidate(
    grader: &Grader,
    base: &Task,
    file: &SourceFile,
    c: &Candidate,
    covering: &BTreeSet<String>,
    passing: &BTreeSet<String>,
    seed: u64,
) -> Result<Option<Kept>> {
    let mutated = c.mutation.apply(&file.text);
    let mut ids: BTreeSet<String> = pick(covering, 40, seed ^ c.mutation.start as u64)
        .into_iter()
        .collect();
    if ids.len() < 4 {
        // Too few covering tests to tell "breaks some" from "breaks all": add neighbours.
        let files: BTreeSet<&str> = ids.iter().filter_map(|i| i.split("::").next()).collect();
        let near: BTreeSet<String> = passing
            .iter()
            .filter(|t| files.contains(t.split("::").next().unwrap_or("")))
            .cloned()
            .collect();
        ids.extend(pick(&near, 10, seed));
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let task = Task {
        bug_patch: unified_diff(&file.path, &file.text, &mutated),
        ..base.clone()
    };
    let mut timings = Default::default();
    let ws = grader.workspace(&task, Variant::Buggy)?;
    let limits_task = Task {
        env: task.env.clone().map(|mut e| {
            e.limits = Limits {
                time_s: 60.0,
                cpu_s: 60,
                ..Limits::default()
            };
            e
        }),
        ..task.clone()
    };
    let (report, out) = grader.run_tests(&limits_task, &ws, &ids, None, &mut timings)?;
    if !report.complete
        || !report.collect_errors.is_empty()
        || out.exit == crate::sandbox::Exit::Timeout
    {
        return Ok(None);
    }
    let failed: Vec<String> = ids.iter().filter(|i| report.failed(i)).cloned().collect();
    let passed: BTreeSet<String> = ids.iter().filter(|i| report.passed(i)).cloned().collect();
    if failed.is_empty() || failed.len() > 10 || passed.is_empty() {
        return Ok(None);
    }
    let messages = failed
        .iter()
        .map(|f| {
            (
                f.clone(),
                report.messages.get(f).cloned().unwrap_or_default(),
            )
        })
        .collect();
    Ok(Some(Kept {
        cand: c.clone(),
        fail_to_pass: failed,
        pass_to_pass: pick(&passed, 15, seed ^ 7),
        messages,
    }))
}
