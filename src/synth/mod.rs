//! Building real task instances from Python packages by mutation.
//!
//! For each package (pinned sdist, `data/corpus/sources.tsv`): run its test suite once in the
//! sandbox, recording which package functions each test calls; enumerate mutations (tree-sitter)
//! in the covered functions; keep a mutant iff at least one of the tests covering it fails while
//! others still pass; and from each kept mutant emit one instance per skill, each checked by
//! grading its gold answer. Seeded and deterministic: the same sources, seed and limits give the
//! same corpus.

pub mod mutate;
mod sources;
mod text;

pub use sources::{read_sources, PackageSpec};

use crate::rng::Rng;
use crate::sandbox::Limits;
use crate::skills::grader::{TestReport, Variant};
use crate::skills::patch::unified_diff;
use crate::skills::{
    gold_completion, pysrc, Env, Grader, PromptContext, Review, Skill, Snippet, Source, Task, Tier,
    Verdict,
};
use anyhow::{bail, Context, Result};
use mutate::Mutation;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use text::*;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    /// Mutants kept per package, at most.
    pub max_mutants: usize,
    /// Mutants tried per package, at most.
    pub max_candidates: usize,
    /// Mutants kept per function, at most.
    pub per_function: usize,
    /// Concurrent sandbox runs.
    pub workers: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            max_mutants: 40,
            max_candidates: 400,
            per_function: 2,
            workers: 2,
        }
    }
}

/// The synthesis generator: SplitMix64 from a seed mixed once more, so that every corpus built
/// since the first one comes out the same.
fn seeded(seed: u64) -> Rng {
    Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
}

fn seed_for(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A package file and its functions.
struct SourceFile {
    path: String,
    text: String,
    funcs: Vec<pysrc::Function>,
}

/// A candidate mutant.
#[derive(Clone)]
struct Candidate {
    file: usize,
    /// The innermost function holding the mutation (index into the file's functions).
    func: usize,
    mutation: Mutation,
}

/// A kept mutant and what its tests said.
struct Kept {
    cand: Candidate,
    fail_to_pass: Vec<String>,
    pass_to_pass: Vec<String>,
    messages: BTreeMap<String, String>,
}

/// Builds the instances of one package. `log` gets progress lines.
pub fn synth_package(
    grader: &Grader,
    spec: &PackageSpec,
    cfg: &SynthConfig,
    log: &dyn Fn(&str),
) -> Result<Vec<Task>> {
    let source = spec.source();
    let tree = grader.pristine(&source)?;
    let base = Task {
        instance_id: format!("{}__baseline", spec.name),
        skill: Skill::Edit,
        env: Some(Env {
            source: source.clone(),
            test_cmd: None,
            pythonpath: spec.pythonpath.clone(),
            limits: Limits {
                time_s: 300.0,
                cpu_s: 300,
                ..Limits::default()
            },
            testgen_path: None,
        }),
        ..Task::default()
    };

    // 1. The suite once, with per-test call tracing.
    let mut timings = Default::default();
    let ws = grader.workspace(&base, Variant::Buggy)?;
    let (baseline, out) =
        grader.run_tests(&base, &ws, &[], Some(&spec.package_dir), &mut timings)?;
    drop(ws);
    if !baseline.complete {
        bail!(
            "{}: the test suite did not report: {}",
            spec.name,
            out.stderr.lines().last().unwrap_or("")
        );
    }
    let passing: BTreeSet<String> = baseline
        .outcomes
        .iter()
        .filter(|(_, o)| *o == "passed")
        .map(|(k, _)| k.clone())
        .collect();
    log(&format!(
        "{}: {} tests, {} passing ({:.1}s)",
        spec.name,
        baseline.outcomes.len(),
        passing.len(),
        out.wall.as_secs_f64()
    ));

    // 2. Package files, functions, and which passing tests call each function.
    let files = package_files(&tree, spec)?;
    let mut callers: BTreeMap<(String, usize), BTreeSet<String>> = BTreeMap::new();
    for (test, calls) in &baseline.calls {
        if !passing.contains(test) {
            continue;
        }
        for c in calls {
            if let Some((f, l)) = c.rsplit_once(':') {
                if let Ok(l) = l.parse::<usize>() {
                    callers
                        .entry((f.to_string(), l))
                        .or_default()
                        .insert(test.clone());
                }
            }
        }
    }
    let tests_of = |file: &SourceFile, f: &pysrc::Function| -> BTreeSet<String> {
        let mut t = callers
            .get(&(file.path.clone(), f.start_line))
            .cloned()
            .unwrap_or_default();
        t.extend(
            callers
                .get(&(file.path.clone(), f.def_line))
                .cloned()
                .unwrap_or_default(),
        );
        t
    };

    // 3. Candidate mutations in covered functions, interleaved across functions.
    let mut rng = seeded(seed_for(cfg.seed, &spec.name));
    let mut per_func: Vec<Vec<Candidate>> = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        for (ki, f) in file.funcs.iter().enumerate() {
            if tests_of(file, f).is_empty() || f.end_line - f.start_line > 80 {
                continue;
            }
            // Only the function's own body: nested definitions are functions of their own.
            let mut muts: Vec<Candidate> =
                mutate::mutations_in(&file.text, f.body_start_byte, f.end_byte)
                    .into_iter()
                    .filter(|m| innermost(&file.funcs, m.start) == Some(ki))
                    .map(|m| Candidate {
                        file: fi,
                        func: ki,
                        mutation: m,
                    })
                    .collect();
            rng.shuffle(&mut muts);
            if !muts.is_empty() {
                per_func.push(muts);
            }
        }
    }
    rng.shuffle(&mut per_func);
    let mut queue: Vec<Candidate> = Vec::new();
    let depth = per_func.iter().map(Vec::len).max().unwrap_or(0);
    for d in 0..depth {
        for muts in &per_func {
            if let Some(c) = muts.get(d) {
                queue.push(c.clone());
            }
        }
    }
    queue.truncate(cfg.max_candidates);
    log(&format!(
        "{}: {} covered functions, {} candidate mutants",
        spec.name,
        per_func.len(),
        queue.len()
    ));

    // 4. Run each candidate's covering tests; keep mutants that fail some and pass others.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.workers.max(1))
        .build()?;
    let mut kept: Vec<Kept> = Vec::new();
    let mut kept_per_func: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut tried = 0;
    for chunk in queue.chunks(cfg.workers.max(1) * 2) {
        if kept.len() >= cfg.max_mutants {
            break;
        }
        let chunk: Vec<&Candidate> = chunk
            .iter()
            .filter(|c| {
                kept_per_func.get(&(c.file, c.func)).copied().unwrap_or(0) < cfg.per_function
            })
            .collect();
        tried += chunk.len();
        let results: Vec<Result<Option<Kept>>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|c| {
                    let file = &files[c.file];
                    let tests = tests_of(file, &file.funcs[c.func]);
                    try_candidate(grader, &base, file, c, &tests, &passing, cfg.seed)
                })
                .collect()
        });
        for r in results {
            if let Some(k) = r? {
                let key = (k.cand.file, k.cand.func);
                if kept.len() < cfg.max_mutants
                    && kept_per_func.get(&key).copied().unwrap_or(0) < cfg.per_function
                {
                    *kept_per_func.entry(key).or_default() += 1;
                    kept.push(k);
                }
            }
        }
    }
    log(&format!(
        "{}: kept {} of {} mutants tried",
        spec.name,
        kept.len(),
        tried
    ));

    // 5. Instances for every skill, each checked by grading its gold answer.
    let per_mutant: Vec<Result<Vec<Task>>> = pool.install(|| {
        kept.par_iter()
            .enumerate()
            .map(|(n, k)| {
                let mut k_rng = seeded(seed_for(cfg.seed, &format!("{}#{n}", spec.name)));
                instances(grader, spec, &base, &files, k, n, &mut k_rng)
            })
            .collect()
    });
    let mut tasks = Vec::new();
    for (n, r) in per_mutant.into_iter().enumerate() {
        match r {
            Ok(t) => tasks.extend(t),
            Err(e) => log(&format!("{}: mutant {n} skipped: {e:#}", spec.name)),
        }
    }
    let checked: Vec<bool> = pool.install(|| {
        tasks
            .par_iter()
            .map(|t| grader.grade(t, &gold_completion(t)).reward == 1.0)
            .collect()
    });
    let before = tasks.len();
    let mut dropped: BTreeMap<Skill, usize> = BTreeMap::new();
    let mut it = checked.iter();
    tasks.retain(|t| {
        let ok = *it.next().unwrap_or(&false);
        if !ok {
            *dropped.entry(t.skill).or_default() += 1;
        }
        ok
    });
    log(&format!(
        "{}: {} instances ({} dropped whose gold did not score 1: {dropped:?})",
        spec.name,
        tasks.len(),
        before - tasks.len()
    ));
    Ok(tasks)
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

fn repo_view(files: &[SourceFile], gold: usize, tier: Tier, rng: &mut Rng) -> String {
    let mut order: Vec<usize> = (0..files.len()).collect();
    rng.shuffle(&mut order);
    if tier == Tier::Easy {
        order.retain(|&i| i != gold);
        order.truncate(3);
        order.push(gold);
        rng.shuffle(&mut order);
    }
    let mut listed: Vec<&str> = order.iter().map(|&i| files[i].path.as_str()).collect();
    listed.sort();
    let mut s = format!("Files:\n{}\n\n", listed.join("\n"));
    let budget = 2400usize.saturating_sub(s.len());
    let share = (budget / order.len().max(1)).max(200);
    for &i in &order {
        let skel = pysrc::skeleton(&files[i].text);
        if skel.is_empty() {
            continue;
        }
        let mut cut = String::new();
        for l in skel.lines() {
            if cut.len() + l.len() + 1 > share {
                cut.push_str("...\n");
                break;
            }
            cut.push_str(l);
            cut.push('\n');
        }
        if s.len() + cut.len() > 2400 {
            break;
        }
        s.push_str(&format!("{}:\n{}", files[i].path, cut));
    }
    s
}

fn instances(
    grader: &Grader,
    spec: &PackageSpec,
    base: &Task,
    files: &[SourceFile],
    k: &Kept,
    n: usize,
    rng: &mut Rng,
) -> Result<Vec<Task>> {
    let file = &files[k.cand.file];
    let m = &k.cand.mutation;
    let buggy = m.apply(&file.text);
    let bug_patch = unified_diff(&file.path, &file.text, &buggy);
    let patch = unified_diff(&file.path, &buggy, &file.text);
    let buggy_funcs = pysrc::functions(&buggy);
    let line = m.line(&file.text);
    let clean_top =
        pysrc::location_at_line(&file.funcs, line).context("mutation outside a function")?;
    // The same function in the buggy file (a removed branch shortens it).
    let top = buggy_funcs
        .iter()
        .find(|f| f.top_level && f.qualname == clean_top.qualname)
        .context("mutated function not found in the buggy file")?;
    let location = format!("{}:{}", file.path, top.qualname);
    let fn_lines = top.end_line - top.start_line + 1;
    let tier =
        if m.line_span(&file.text) == 1 && m.replacement.lines().count() <= 1 && fn_lines <= 25 {
            Tier::Easy
        } else {
            Tier::Normal
        };
    let (s0, s1) = if fn_lines <= 60 {
        (top.start_line, top.end_line)
    } else {
        (
            line.saturating_sub(20).max(top.start_line),
            (line + 20).min(top.end_line),
        )
    };
    let snippet = Snippet {
        path: file.path.clone(),
        start_line: s0,
        text: pysrc::lines(&buggy, s0, s1),
    };
    let statement = problem_statement(k);
    let buggy_line = file
        .text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim()
        .to_string();
    let mutated_line = buggy.lines().nth(line - 1).unwrap_or("").trim().to_string();
    let mut instruction = format!(
        "Fix `{}` in {} so that these tests pass: {}.",
        top.qualname,
        file.path,
        k.fail_to_pass
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if tier == Tier::Easy && !mutated_line.is_empty() {
        instruction.push_str(&format!(" The bug is on line {line}: `{mutated_line}`."));
    }
    let _ = buggy_line;
    let qual_slug: String = top.qualname.replace(".<locals>", "").replace('.', "_");
    let id = |skill: Skill| format!("{}__{}__m{:03}.{}", spec.name, qual_slug, n, skill);
    let common = Task {
        repo: format!("pypi/{}", spec.name),
        base_commit: format!("{}-{}", spec.name, spec.version),
        patch: patch.clone(),
        problem_statement: statement,
        FAIL_TO_PASS: k.fail_to_pass.clone(),
        PASS_TO_PASS: k.pass_to_pass.clone(),
        version: Some(spec.version.clone()),
        bug_patch,
        gold_locations: vec![location],
        env: base.env.clone().map(|mut e| {
            e.limits = Limits {
                time_s: 30.0,
                cpu_s: 30,
                ..Limits::default()
            };
            e
        }),
        split: Some(spec.split.clone()),
        tier,
        ..Task::default()
    };
    let with_snippet = Some(PromptContext {
        repo_view: None,
        snippets: vec![snippet],
    });
    let mut out = Vec::new();
    // A single-file package makes localize trivial: no instance then.
    if files.len() > 1 {
        out.push(Task {
            instance_id: id(Skill::Localize),
            skill: Skill::Localize,
            context: Some(PromptContext {
                repo_view: Some(repo_view(files, k.cand.file, tier, rng)),
                snippets: vec![],
            }),
            ..common.clone()
        });
    }
    out.push(Task {
        instance_id: id(Skill::Edit),
        skill: Skill::Edit,
        edit_instruction: Some(instruction),
        context: with_snippet.clone(),
        ..common.clone()
    });
    // testgen's gold: the failing tests' own source if it stands alone, else an import of them.
    let testgen = Task {
        instance_id: id(Skill::Testgen),
        skill: Skill::Testgen,
        context: with_snippet.clone(),
        ..common.clone()
    };
    let tree = grader.pristine(&spec.source())?;
    let mut golds: Vec<String> = extracted_test(&tree, &k.fail_to_pass).into_iter().collect();
    golds.push(gold_test(&k.fail_to_pass));
    let n_golds = golds.len();
    for (i, g) in golds.into_iter().enumerate() {
        let t = Task {
            gold_test: Some(g),
            ..testgen.clone()
        };
        if i + 1 == n_golds || grader.grade(&t, &gold_completion(&t)).reward == 1.0 {
            out.push(t);
            break;
        }
    }
    // reproduce's gold: the failing test functions called as a script if they take no
    // arguments, else (gold_script None) pytest run on the failing tests.
    let reproduce = Task {
        instance_id: id(Skill::Reproduce),
        skill: Skill::Reproduce,
        context: with_snippet,
        ..common.clone()
    };
    let mut scripts: Vec<Option<String>> = Vec::new();
    if let Some(script) =
        extracted_test(&tree, &k.fail_to_pass).and_then(|t| as_script(&t, &k.fail_to_pass))
    {
        scripts.push(Some(script));
    }
    scripts.push(None);
    let n_scripts = scripts.len();
    for (i, s) in scripts.into_iter().enumerate() {
        let t = Task {
            gold_script: s,
            ..reproduce.clone()
        };
        if i + 1 == n_scripts || grader.grade(&t, &gold_completion(&t)).reward == 1.0 {
            out.push(t);
            break;
        }
    }

    // Review: half gold fixes, half wrong patches (a sibling mutation at the same place, or a
    // second mutation in the same function); the label comes from running the tests.
    let wrong = n % 2 == 1;
    let candidate = if wrong {
        wrong_candidate(file, k, &buggy, rng)
    } else {
        None
    };
    let candidate_patch = candidate.unwrap_or_else(|| patch.clone());
    let review_task = Task {
        instance_id: id(Skill::Review),
        skill: Skill::Review,
        ..common.clone()
    };
    let label = label_candidate(grader, &review_task, &candidate_patch)?;
    out.push(Task {
        review: Some(Review {
            candidate_patch,
            label,
        }),
        ..review_task
    });
    Ok(out)
}

/// A plausible but different change to the buggy code, as a diff from the buggy file.
fn wrong_candidate(file: &SourceFile, k: &Kept, buggy: &str, rng: &mut Rng) -> Option<String> {
    let m = &k.cand.mutation;
    let delta = m.replacement.len() as isize - (m.end - m.start) as isize;
    // The same place, replaced by a sibling alternative (e.g. `<` → `>` where the bug is `<=`).
    if let Some(alt) = m.siblings.first() {
        let end = (m.end as isize + delta) as usize;
        let cand = format!("{}{}{}", &buggy[..m.start], alt, &buggy[end..]);
        if cand != file.text && pysrc::syntax_ok(&cand) {
            return Some(unified_diff(&file.path, buggy, &cand));
        }
    }
    // Otherwise another mutation of the same function, on top of the bug.
    let funcs = pysrc::functions(buggy);
    let f = funcs
        .iter()
        .find(|f| f.qualname == file.funcs[k.cand.func].qualname)?;
    let mut others: Vec<Mutation> = mutate::mutations_in(buggy, f.body_start_byte, f.end_byte);
    others.retain(|o| o.end <= m.start || o.start >= (m.end as isize + delta) as usize);
    if others.is_empty() {
        return None;
    }
    let o = &others[rng.below(others.len() as u64) as usize];
    Some(unified_diff(&file.path, buggy, &o.apply(buggy)))
}

fn label_candidate(grader: &Grader, task: &Task, candidate: &str) -> Result<Verdict> {
    let t = Task {
        patch: candidate.to_string(),
        ..task.clone()
    };
    let mut timings = Default::default();
    let ws = match grader.workspace(&t, Variant::Fixed) {
        Ok(ws) => ws,
        Err(_) => return Ok(Verdict::Incorrect), // does not apply
    };
    let (report, _) = grader.run_tests(&t, &ws, &t.test_ids(), None, &mut timings)?;
    let all = report.complete && t.test_ids().iter().all(|id| passes(&report, id));
    Ok(if all {
        Verdict::Correct
    } else {
        Verdict::Incorrect
    })
}

fn passes(r: &TestReport, id: &str) -> bool {
    matches!(
        r.outcomes.get(id).map(String::as_str),
        Some("passed" | "xfailed" | "skipped")
    )
}

/// Builds the corpus of all packages into `<out>/train.jsonl` and `<out>/test.jsonl`.
pub fn synth_all(
    grader: &Grader,
    specs: &[PackageSpec],
    cfg: &SynthConfig,
    out: &Path,
    log: &dyn Fn(&str),
) -> Result<Vec<Task>> {
    let mut all = Vec::new();
    for spec in specs {
        all.extend(synth_package(grader, spec, cfg, log)?);
    }
    std::fs::create_dir_all(out)?;
    for split in ["train", "test"] {
        let part: Vec<Task> = all
            .iter()
            .filter(|t| t.split.as_deref() == Some(split))
            .cloned()
            .collect();
        crate::skills::write_tasks(&out.join(format!("{split}.jsonl")), &part)?;
    }
    Ok(all)
}

impl PackageSpec {
    pub fn source(&self) -> Source {
        if let Some(dir) = &self.local_dir {
            return Source::Dir { path: dir.clone() };
        }
        Source::Sdist {
            name: self.name.clone(),
            version: self.version.clone(),
            file: self.file.clone(),
            sha256: self.sha256.clone(),
        }
    }
}
