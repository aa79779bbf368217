//! Faults inside a step: a completion that breaks the grader, a grader that panics or returns a
//! non-finite reward, a sandbox run that hits its time limit, and a NaN in the loss. Each step
//! logs the fault and goes on; a refused update leaves weights and optimizer state untouched.
//! And a step whose first groups carry no signal samples more (dynamic sampling).

mod run_support;

use std::path::Path;

use atomrl::backend::cpu::Cpu;
use atomrl::metrics::Metrics;
use atomrl::model::Model;
use atomrl::rl::environment::Environment;
use atomrl::rl::run::load_config;
use atomrl::rl::run_config::RunConfig;
use atomrl::rl::step::{grade, rollout, step, StepContext};
use atomrl::rl::tasks::TaskPool;
use atomrl::rl::trainer::{TrainConfig, Trainer};
use atomrl::sandbox::Limits;
use atomrl::skills::{Grade, Grader, GraderConfig, Task};
use atomrl::tokenizer::Tokenizer;

/// The run's pieces, as `rl::run` assembles them.
struct Setup {
    cfg: RunConfig,
    tokenizer: Tokenizer,
    pool: TaskPool,
}

fn setup(root: &Path, tasks: Option<&Path>, overrides: &[&str]) -> Setup {
    let config = run_support::write_run(root, "");
    let mut ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    if let Some(t) = tasks {
        ov.push(format!("data.train=[{:?}]", t.display().to_string()));
    }
    let cfg = load_config(Some(&config), &ov).unwrap();
    let tokenizer = Tokenizer::from_dir(&cfg.model.path).unwrap();
    let pool = TaskPool::load(&cfg.data.train, cfg.data.bad_lines, &[], |_| 1.0, &tokenizer, cfg.rollout.max_prompt_tokens, atomrl::skills::prompt).unwrap();
    Setup { cfg, tokenizer, pool }
}

fn trainer(s: &Setup) -> Trainer<Cpu> {
    let c = &s.cfg;
    let tc = TrainConfig { objective: c.objective.clone(), optimizer: c.optimizer.clone(), schedule: c.schedule.clone(), recompute: c.trainer.recompute.clone(), seed: c.trainer.seed, keep_last: 1 };
    Trainer::new(&Cpu, Model::load(&Cpu, &c.model.path).unwrap(), tc, &c.model.path).unwrap()
}

fn ctx<'a>(s: &'a Setup, env: &'a dyn Environment) -> StepContext<'a, Cpu> {
    StepContext { be: &Cpu, cfg: &s.cfg, tokenizer: &s.tokenizer, env, pool: &s.pool, reference: None }
}

/// Every weight and both AdamW moments, as bits (NaN compares equal to itself).
fn state_bits(t: &Trainer<Cpu>) -> Vec<u32> {
    let mut out: Vec<u32> = t.model.to_host(&Cpu).unwrap().visit().into_iter().flat_map(|w| w.iter().map(|x| x.to_bits())).collect();
    for (_, _, data) in t.opt.to_host(&Cpu, &t.infos).unwrap() {
        out.extend(data.iter().map(|x| x.to_bits()));
    }
    out
}

fn get(m: &Metrics, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"))
}

/// Grades `alpha` tasks properly, panics on `beta` tasks and returns NaN for `gamma` tasks.
struct Faulty;

impl Environment for Faulty {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        items
            .iter()
            .map(|(t, c)| {
                if t.instance_id.contains("beta") {
                    panic!("grader bug on {}", t.instance_id);
                }
                let mut g = run_support::text_grade(t, c);
                if t.instance_id.contains("gamma") {
                    g.reward = f32::NAN;
                }
                g
            })
            .collect()
    }
}

#[test]
fn a_panicking_or_nan_grader_costs_only_its_completions() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(tmp.path(), None, &["rollout.prompts_per_step=12", "advantages.filter_zero_std=false"]);
    let mut t = trainer(&s);
    let c = ctx(&s, &Faulty);
    let picks: Vec<usize> = (0..s.pool.tasks.len()).collect();
    let rollouts = rollout(&c, &t.model, &picks, 5).unwrap();
    let grades = grade(&c, &rollouts);
    assert_eq!(grades.len(), rollouts.len());
    for (r, g) in rollouts.iter().zip(&grades) {
        let id = &s.pool.tasks[r.task].task.instance_id;
        if id.contains("alpha") {
            assert_ne!(g.reason, "internal", "{id}: {g:?}");
        } else {
            assert_eq!((g.reward, g.reason.as_str()), (0.0, "internal"), "{id}: {g:?}");
            assert!(g.detail.contains(if id.contains("beta") { "panicked" } else { "non-finite" }), "{g:?}");
        }
    }
    let m = step(&c, &mut t).unwrap();
    assert!(get(&m, "grading/internal_errors") > 0.0, "{m:?}");
    assert!(get(&m, "reward/mean").is_finite());
    assert_eq!((get(&m, "train/updates"), get(&m, "train/skipped_updates")), (1.0, 0.0));
}

#[test]
fn a_nan_loss_skips_the_update_and_leaves_the_state_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    // Without filtering, a group of equal rewards still reaches the loss (with advantage 0).
    let s = setup(tmp.path(), None, &["advantages.filter_zero_std=false"]);
    let mut t = trainer(&s);
    let c = ctx(&s, &run_support::Localize);
    // One ordinary step first, so that the optimizer has moments to protect.
    step(&c, &mut t).unwrap();
    let clean = t.model.to_host(&Cpu).unwrap();
    let mut poisoned = clean.clone();
    poisoned.visit_mut()[1][0] = f32::NAN;
    t.model = Model::from_host(&Cpu, t.model.config.clone(), &poisoned).unwrap();
    let (before, opt_step) = (state_bits(&t), t.opt.step);

    let m = step(&c, &mut t).unwrap();
    assert_eq!((get(&m, "train/updates"), get(&m, "train/skipped_updates")), (0.0, 1.0), "{m:?}");
    assert!(state_bits(&t) == before, "a skipped update changed the weights or the optimizer state");
    assert_eq!(t.opt.step, opt_step);

    // Clean weights again: the next step updates as usual.
    t.model = Model::from_host(&Cpu, t.model.config.clone(), &clean).unwrap();
    let m = step(&c, &mut t).unwrap();
    assert_eq!((get(&m, "train/updates"), get(&m, "train/skipped_updates")), (1.0, 0.0), "{m:?}");
    assert_eq!(t.opt.step, opt_step + 1);
    let after = t.model.to_host(&Cpu).unwrap();
    assert!(after.visit().iter().all(|w| w.iter().all(|x| x.is_finite())));
    assert!(after.visit().into_iter().zip(clean.visit()).any(|(a, b)| a != b), "the update changed nothing");
}

/// Scores 0 for every completion of its first `silent` calls, then 1 for every other completion.
struct SilentAtFirst {
    silent: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl Environment for SilentAtFirst {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (0..items.len())
            .map(|i| Grade { reward: if call >= self.silent && i % 2 == 0 { 1.0 } else { 0.0 }, reason: "ok".into(), detail: String::new(), metrics: Default::default(), timings: Default::default() })
            .collect()
    }
}

#[test]
fn dynamic_sampling_samples_again_until_some_groups_carry_a_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let silent = |n| SilentAtFirst { silent: n, calls: Default::default() };
    // One round: every group scores 0, nothing to learn from.
    let s = setup(tmp.path(), None, &["rollout.prompts_per_step=3", "rollout.group_size=4"]);
    let mut t = trainer(&s);
    let m = step(&ctx(&s, &silent(2)), &mut t).unwrap();
    assert_eq!((get(&m, "rollout/sampling_rounds"), get(&m, "rollout/informative_groups"), get(&m, "train/updates")), (1.0, 0.0, 0.0), "{m:?}");

    // Up to four rounds: two silent ones, then a round whose groups all differ, and it stops.
    let s = setup(tmp.path(), None, &["rollout.prompts_per_step=3", "rollout.group_size=4", "rollout.max_sampling_rounds=4"]);
    let mut t = trainer(&s);
    let position = t.data_position;
    let m = step(&ctx(&s, &silent(2)), &mut t).unwrap();
    assert_eq!((get(&m, "rollout/sampling_rounds"), get(&m, "rollout/informative_groups")), (3.0, 3.0), "{m:?}");
    // Nine groups of four, six silent: groups of different rounds were kept apart.
    assert!((get(&m, "frac_reward_zero_std") - 6.0 / 9.0).abs() < 1e-6, "{m:?}");
    assert!((get(&m, "reward/mean") - 6.0 / 36.0).abs() < 1e-6, "{m:?}");
    assert_eq!(t.data_position, position + 9);
    assert_eq!(get(&m, "train/updates"), 1.0);

    // The rounds are capped even when no signal ever comes.
    let s = setup(tmp.path(), None, &["rollout.prompts_per_step=2", "rollout.max_sampling_rounds=2", "rollout.min_informative_groups=1"]);
    let m = step(&ctx(&s, &silent(usize::MAX)), &mut trainer(&s)).unwrap();
    assert_eq!((get(&m, "rollout/sampling_rounds"), get(&m, "train/updates")), (2.0, 0.0), "{m:?}");
}

/// Grades every completion of a step as one of `answers` instead, with the real grader.
struct Forced<'a> {
    grader: &'a Grader,
    answers: &'a [&'a str],
}

impl Environment for Forced<'_> {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        let forced: Vec<(&Task, &str)> = items.iter().enumerate().map(|(i, (t, _))| (*t, self.answers[i % self.answers.len()])).collect();
        self.grader.grade_batch(&forced)
    }
}

/// A one-module Python package and an edit and a reproduce task on it.
fn write_package_tasks(root: &Path) -> std::path::PathBuf {
    let src = root.join("pkgsrc");
    std::fs::create_dir_all(src.join("pkg")).unwrap();
    std::fs::create_dir_all(src.join("tests")).unwrap();
    std::fs::write(src.join("pkg/__init__.py"), "").unwrap();
    std::fs::write(src.join("pkg/mod.py"), "def f():\n    return 2\n").unwrap();
    std::fs::write(src.join("tests/test_mod.py"), "from pkg.mod import f\n\n\ndef test_f():\n    assert f() == 1\n").unwrap();
    let patch = "--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 2\n+    return 1\n";
    let env = serde_json::json!({"source": {"kind": "dir", "path": src.display().to_string()}});
    let tasks = [
        serde_json::json!({"instance_id": "pkg__f.edit", "skill": "edit", "patch": patch, "problem_statement": "f returns 2",
            "FAIL_TO_PASS": ["tests/test_mod.py::test_f"], "env": env}),
        serde_json::json!({"instance_id": "pkg__f.reproduce", "skill": "reproduce", "patch": patch, "problem_statement": "f returns 2",
            "FAIL_TO_PASS": ["tests/test_mod.py::test_f"], "env": env}),
    ];
    let path = root.join("pkg_tasks.jsonl");
    std::fs::write(&path, tasks.iter().map(|t| t.to_string() + "\n").collect::<String>()).unwrap();
    path
}

fn sandboxed_grader(test: &str, limits: Option<Limits>) -> Option<Grader> {
    match Grader::new(GraderConfig { workers: 2, limits, ..GraderConfig::default() }) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("SKIPPED {test}: the sandbox cannot run here: {e:#}");
            None
        }
    }
}

#[test]
fn garbage_patches_and_sandbox_timeouts_score_zero_and_the_run_goes_on() {
    let limits = Limits { time_s: 1.0, cpu_s: 2, ..Limits::default() };
    let Some(grader) = sandboxed_grader("garbage_patches_and_sandbox_timeouts_score_zero_and_the_run_goes_on", Some(limits)) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tasks = write_package_tasks(tmp.path());
    let s = setup(tmp.path(), Some(&tasks), &["rollout.prompts_per_step=2", "rollout.group_size=3"]);
    let mut t = trainer(&s);
    let answers = [
        "\u{0}\u{1}\u{7f}\u{fffd}\u{fffd}garbage\u{0}```diff\n\u{0}",
        "```diff\n--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -1,7 +1,9 @@\n-nothing like this\n+x\n```",
        "```diff\n--- a/pkg/nowhere.py\n+++ b/pkg/nowhere.py\n@@ -1 +1 @@\n-a\n+b\n```\n```python\nwhile True:\n    pass\n```",
    ];
    let env = Forced { grader: &grader, answers: &answers };
    let c = ctx(&s, &env);
    let weights = state_bits(&t);
    let started = std::time::Instant::now();
    let m = step(&c, &mut t).unwrap();
    eprintln!("step with faults in {:.1}s: {m:?}", started.elapsed().as_secs_f64());
    assert_eq!(get(&m, "reward/mean"), 0.0);
    assert_eq!(get(&m, "grading/internal_errors") + get(&m, "grading/infra_errors"), 0.0, "{m:?}");
    // Rewards all 0: no signal, no update, no change.
    assert_eq!(get(&m, "train/updates"), 0.0);
    assert!(state_bits(&t) == weights);

    // The same answers on every task, graded one by one, give the reasons.
    let reasons: Vec<(String, String)> = s.pool.tasks.iter().flat_map(|p| answers.iter().map(|a| (p.task.instance_id.clone(), grader.grade(&p.task, a).reason))).collect();
    eprintln!("{reasons:?}");
    for (id, reason) in &reasons {
        assert!(["format", "patch_failed", "syntax", "timeout"].contains(&reason.as_str()), "{id}: {reason}");
    }
    assert!(reasons.iter().any(|(id, r)| id.ends_with("reproduce") && r == "timeout"), "{reasons:?}");
    assert!(reasons.iter().any(|(id, r)| id.ends_with("edit") && r == "patch_failed"), "{reasons:?}");
}
