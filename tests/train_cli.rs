//! `atomrl train` as a user runs it: a run killed with SIGKILL mid-step and resumed with
//! `--resume` ends exactly as an uninterrupted one (weights, optimizer state and every logged
//! metric), with each step logged once; and the command line's config handling (`--dry-run`,
//! overrides, unknown keys, `--output`, refusing to overwrite a run).

mod run_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atomrl::skills::{Grader, GraderConfig};

fn atomrl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atomrl"))
}

/// Runs `atomrl args...` to completion; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = atomrl().args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The one `error:` line of a failed run.
fn error_of(args: &[&str]) -> String {
    let (ok, _, stderr) = run(args);
    assert!(!ok, "atomrl {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    line.to_string()
}

/// `atomrl train` needs the sandbox to start its grader.
fn sandbox_works(test: &str) -> bool {
    match Grader::new(GraderConfig { workers: 1, ..GraderConfig::default() }) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: the sandbox cannot run here: {e:#}");
            false
        }
    }
}

fn latest_step(run_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run_dir.join("latest")).ok()?;
    text.trim().strip_prefix("step_")?.parse().ok()
}

fn logged_steps(run_dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["step"].as_u64()).collect()
}

/// Metrics that are measurements of time, which no two runs share.
fn timing(key: &str) -> bool {
    key.starts_with("timing/") || key.starts_with("throughput/")
}

#[test]
fn killed_run_resumes_exactly() {
    if !sandbox_works("killed_run_resumes_exactly") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let config = config.to_str().unwrap();
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    let common = ["trainer.max_steps=16", "checkpoint.every=4", "eval.every=6"];
    let train = |out: &Path, resume: bool| {
        let mut args = vec!["train", "--config", config, "--output", out.to_str().unwrap()];
        args.extend(common);
        if resume {
            args.push("--resume");
        }
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };

    let (ok, _, stderr) = run(&train(&full, false).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    let uninterrupted = started.elapsed();

    // Killed once a checkpoint exists and a later step has been logged: the next step is running.
    let mut child = atomrl().args(train(&split, false)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let checkpoint = loop {
        if let Some(k) = latest_step(&split) {
            if logged_steps(&split).iter().any(|&s| s > k) {
                break k;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "no checkpoint after two minutes");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(checkpoint < 16);
    let before_resume = logged_steps(&split);
    assert!(before_resume.iter().any(|&s| s > checkpoint), "{before_resume:?}");

    let (ok, _, stderr) = run(&train(&split, true).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("resuming from step {checkpoint}")), "{stderr}");

    // Each step logged exactly once, in order, with the metrics of the uninterrupted run.
    assert_eq!(logged_steps(&split), (1..=16).collect::<Vec<_>>());
    let (a, b) = (run_support::metrics(&full), run_support::metrics(&split));
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
        let keys = |o: &serde_json::Map<String, serde_json::Value>| o.keys().filter(|k| !timing(k)).cloned().collect::<Vec<_>>();
        assert_eq!(keys(x), keys(y), "step {}", x["step"]);
        for k in keys(x) {
            assert_eq!(x[&k], y[&k], "{k} differs at step {} after resuming from step {checkpoint}", x["step"]);
        }
    }
    // The same final weights and optimizer state, bit for bit.
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let (x, y) = (std::fs::read(full.join("step_16").join(f)).unwrap(), std::fs::read(split.join("step_16").join(f)).unwrap());
        assert!(x == y, "{f} differs after resuming from step {checkpoint}");
    }
    eprintln!("killed after checkpoint {checkpoint} with steps {before_resume:?} logged; uninterrupted run {:.1}s, all {:.1}s", uninterrupted.as_secs_f64(), started.elapsed().as_secs_f64());
}

#[test]
fn dry_run_prints_the_resolved_config_with_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let out = tmp.path().join("never");
    let (ok, stdout, stderr) = run(&["train", "--config", config.to_str().unwrap(), "--output", out.to_str().unwrap(), "--dry-run", "trainer.max_steps=7", "rollout.temperature=0.7", "objective.temperature=0.7"]);
    assert!(ok, "{stderr}");
    let resolved: toml::Table = stdout.parse().unwrap_or_else(|e| panic!("--dry-run output is not TOML ({e}): {stdout}"));
    assert_eq!(resolved["trainer"]["max_steps"].as_integer(), Some(7), "{stdout}");
    assert_eq!(resolved["rollout"]["temperature"].as_float(), Some(0.7), "{stdout}");
    // Every section is printed, defaults included, so the output is a complete config.
    for section in ["model", "data", "rollout", "objective", "advantages", "optimizer", "schedule", "trainer", "eval", "checkpoint", "grading"] {
        assert!(resolved.contains_key(section), "no [{section}] in {stdout}");
    }
    assert!(!out.exists(), "--dry-run created the run directory");
    // The printed config is itself a valid config.
    let again = tmp.path().join("again.toml");
    std::fs::write(&again, &stdout).unwrap();
    let (ok, stdout2, stderr) = run(&["train", "--config", again.to_str().unwrap(), "--dry-run"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, stdout2);
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let c = config.to_str().unwrap();
    let err = error_of(&["train", "--config", c, "--dry-run", "trainer.max_stepz=3"]);
    assert!(err.contains("trainer.max_stepz"), "{err}");
    let err = error_of(&["train", "--config", c, "--dry-run", "rollouts.group_size=3"]);
    assert!(err.contains("rollouts"), "{err}");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&config).unwrap().replace("group_size = 8", "groupsize = 8")).unwrap();
    let err = error_of(&["train", "--config", bad.to_str().unwrap(), "--dry-run"]);
    assert!(err.contains("groupsize"), "{err}");
    let err = error_of(&["train", "--config", c, "--dry-run", "rollout.top_p=1.5"]);
    assert!(err.contains("rollout.top_p"), "{err}");
    let err = error_of(&["train", "--config", c, "--dry-run", "trainer.max_steps=-1"]);
    assert!(err.contains("trainer.max_steps"), "{err}");
    let err = error_of(&["train", "--config", c, "--dry-run", "rollout.temperature=0.5"]);
    assert!(err.contains("objective.temperature"), "{err}");
    let err = error_of(&["train", "--config", c, "--dry-run", "rollout.max_sampling_rounds=2", "rollout.min_informative_groups=13"]);
    assert!(err.contains("rollout.min_informative_groups (13)") && err.contains("(12)"), "{err}");
}

#[test]
fn a_fresh_run_refuses_a_directory_that_holds_one() {
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let err = error_of(&["train", "--config", config.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("--resume") && err.contains("metrics.jsonl"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(), "{\"step\": 1}\n", "the old run was touched");
}

#[test]
fn max_steps_and_output_come_from_the_command_line() {
    if !sandbox_works("max_steps_and_output_come_from_the_command_line") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = run_support::write_run(tmp.path(), "");
    let out = tmp.path().join("elsewhere");
    let args = ["train", "--config", config.to_str().unwrap(), "--output", out.to_str().unwrap(), "trainer.max_steps=3", "eval.before_and_after=false"];
    let (ok, _, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert_eq!(logged_steps(&out), vec![1, 2, 3]);
    assert_eq!(latest_step(&out), Some(3));
    let saved: toml::Table = std::fs::read_to_string(out.join("config.toml")).unwrap().parse().unwrap();
    assert_eq!(saved["trainer"]["max_steps"].as_integer(), Some(3));
    // Resuming a finished run does nothing; raising max_steps goes on from where it stopped.
    let (ok, _, stderr) = run(&[&args[..], &["--resume"]].concat());
    assert!(ok && stderr.contains("nothing to do"), "{stderr}");
    assert_eq!(logged_steps(&out), vec![1, 2, 3]);
    let mut more = args.to_vec();
    more[5] = "trainer.max_steps=5";
    more.push("--resume");
    let (ok, _, stderr) = run(&more);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("trainer.max_steps: 3 -> 5"), "{stderr}");
    assert_eq!(logged_steps(&out), vec![1, 2, 3, 4, 5]);
}
