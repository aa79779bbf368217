//! From a kept mutant to one task instance per skill, each gold answer checked by grading it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::text::*;
use super::{mutate, seed_for, seeded, Kept, PackageSpec, SourceFile, SynthConfig};
use crate::rng::Rng;
use crate::sandbox::Limits;
use crate::skills::grader::{TestReport, Variant};
use crate::skills::patch::unified_diff;
use crate::skills::{gold_completion, pysrc, Grader, PromptContext, Review, Skill, Snippet, Task, Tier, Verdict};
use mutate::Mutation;

/// Step 5 of the synthesis: the instances of every kept mutant; an instance whose gold answer
/// does not score 1 is dropped (and counted in the log).
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(
    grader: &Grader,
    spec: &PackageSpec,
    cfg: &SynthConfig,
    base: &Task,
    files: &[SourceFile],
    kept: &[Kept],
    pool: &rayon::ThreadPool,
    log: &dyn Fn(&str),
) -> Vec<Task> {
    let per_mutant: Vec<Result<Vec<Task>>> = pool.install(|| {
        kept.par_iter()
            .enumerate()
            .map(|(n, k)| {
                let mut k_rng = seeded(seed_for(cfg.seed, &format!("{}#{n}", spec.name)));
                instances(grader, spec, base, files, k, n, &mut k_rng)
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
    let checked: Vec<bool> = pool.install(|| tasks.par_iter().map(|t| grader.grade(t, &gold_completion(t)).reward == 1.0).collect());
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
    log(&format!("{}: {} instances ({} dropped whose gold did not score 1: {dropped:?})", spec.name, tasks.len(), before - tasks.len()));
    tasks
}

/// One instance per skill from mutant `n` (no localize for a single-file package).
fn instances(grader: &Grader, spec: &PackageSpec, base: &Task, files: &[SourceFile], k: &Kept, n: usize, rng: &mut Rng) -> Result<Vec<Task>> {
    let file = &files[k.cand.file];
    let buggy = k.cand.mutation.apply(&file.text);
    let Shared { common, snippet, instruction, qualname } = shared(spec, base, file, k, &buggy)?;
    let qual_slug: String = qualname.replace(".<locals>", "").replace('.', "_");
    let id = |skill: Skill| format!("{}__{}__m{:03}.{}", spec.name, qual_slug, n, skill);
    let with_snippet = Some(PromptContext { repo_view: None, snippets: vec![snippet] });
    let mut out = Vec::new();
    // A single-file package makes localize trivial: no instance then.
    if files.len() > 1 {
        let context = PromptContext { repo_view: Some(repo_view(files, k.cand.file, common.tier, rng)), snippets: vec![] };
        out.push(Task { instance_id: id(Skill::Localize), skill: Skill::Localize, context: Some(context), ..common.clone() });
    }
    out.push(Task { instance_id: id(Skill::Edit), skill: Skill::Edit, edit_instruction: Some(instruction), context: with_snippet.clone(), ..common.clone() });

    // testgen's gold: the failing tests' own source if it stands alone, else an import of them.
    let testgen = Task { instance_id: id(Skill::Testgen), skill: Skill::Testgen, context: with_snippet.clone(), ..common.clone() };
    let tree = grader.pristine(&spec.source())?;
    let mut golds: Vec<String> = extracted_test(&tree, &k.fail_to_pass).into_iter().collect();
    golds.push(gold_test(&k.fail_to_pass));
    out.push(first_scoring(grader, golds.into_iter().map(|g| Task { gold_test: Some(g), ..testgen.clone() }).collect()));

    // reproduce's gold: the failing test functions called as a script if they take no
    // arguments, else (gold_script None) pytest run on the failing tests.
    let reproduce = Task { instance_id: id(Skill::Reproduce), skill: Skill::Reproduce, context: with_snippet, ..common.clone() };
    let mut scripts: Vec<Option<String>> = Vec::new();
    if let Some(script) = extracted_test(&tree, &k.fail_to_pass).and_then(|t| as_script(&t, &k.fail_to_pass)) {
        scripts.push(Some(script));
    }
    scripts.push(None);
    out.push(first_scoring(grader, scripts.into_iter().map(|s| Task { gold_script: s, ..reproduce.clone() }).collect()));

    // Review: half gold fixes, half wrong patches (a sibling mutation at the same place, or a
    // second mutation in the same function); the label comes from running the tests.
    let wrong = if n % 2 == 1 { wrong_candidate(file, k, &buggy, rng) } else { None };
    let candidate_patch = wrong.unwrap_or_else(|| common.patch.clone());
    let review_task = Task { instance_id: id(Skill::Review), skill: Skill::Review, ..common };
    let label = label_candidate(grader, &review_task, &candidate_patch)?;
    out.push(Task { review: Some(Review { candidate_patch, label }), ..review_task });
    Ok(out)
}

/// What the instances of one mutant are built from.
struct Shared {
    /// The fields every skill's instance shares (patches, issue text, tests, location, tier).
    common: Task,
    /// The buggy function (or the 41 lines around the bug in a long one).
    snippet: Snippet,
    /// The edit skill's instruction.
    instruction: String,
    /// The mutated top-level function.
    qualname: String,
}

fn shared(spec: &PackageSpec, base: &Task, file: &SourceFile, k: &Kept, buggy: &str) -> Result<Shared> {
    let m = &k.cand.mutation;
    let line = m.line(&file.text);
    let clean_top = pysrc::location_at_line(&file.funcs, line).context("mutation outside a function")?;
    // The same function in the buggy file (a removed branch shortens it).
    let buggy_funcs = pysrc::functions(buggy);
    let top = buggy_funcs.iter().find(|f| f.top_level && f.qualname == clean_top.qualname).context("mutated function not found in the buggy file")?;
    let fn_lines = top.end_line - top.start_line + 1;
    let easy = m.line_span(&file.text) == 1 && m.replacement.lines().count() <= 1 && fn_lines <= 25;
    let tier = if easy { Tier::Easy } else { Tier::Normal };
    let (s0, s1) = if fn_lines <= 60 { (top.start_line, top.end_line) } else { (line.saturating_sub(20).max(top.start_line), (line + 20).min(top.end_line)) };
    let snippet = Snippet { path: file.path.clone(), start_line: s0, text: pysrc::lines(buggy, s0, s1) };
    let failing: Vec<String> = k.fail_to_pass.iter().take(3).cloned().collect();
    let mut instruction = format!("Fix `{}` in {} so that these tests pass: {}.", top.qualname, file.path, failing.join(", "));
    let mutated_line = buggy.lines().nth(line - 1).unwrap_or("").trim();
    if tier == Tier::Easy && !mutated_line.is_empty() {
        instruction.push_str(&format!(" The bug is on line {line}: `{mutated_line}`."));
    }
    let common = Task {
        repo: format!("pypi/{}", spec.name),
        base_commit: format!("{}-{}", spec.name, spec.version),
        patch: unified_diff(&file.path, buggy, &file.text),
        problem_statement: problem_statement(k),
        FAIL_TO_PASS: k.fail_to_pass.clone(),
        PASS_TO_PASS: k.pass_to_pass.clone(),
        version: Some(spec.version.clone()),
        bug_patch: unified_diff(&file.path, &file.text, buggy),
        gold_locations: vec![format!("{}:{}", file.path, top.qualname)],
        env: base.env.clone().map(|mut e| {
            e.limits = Limits { time_s: 30.0, cpu_s: 30, ..Limits::default() };
            e
        }),
        split: Some(spec.split.clone()),
        tier,
        ..Task::default()
    };
    Ok(Shared { common, snippet, instruction, qualname: top.qualname.clone() })
}

/// The first of `variants` whose gold answer scores 1, else the last (the form that always holds).
fn first_scoring(grader: &Grader, variants: Vec<Task>) -> Task {
    let n = variants.len();
    variants.into_iter().enumerate().find(|(i, t)| i + 1 == n || grader.grade(t, &gold_completion(t)).reward == 1.0).map(|(_, t)| t).expect("at least one variant")
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
