//! `atomrl eval`: per-completion JSON lines, the summary, pass@k.

mod skills_support;

use atomrl::cli::eval::pass_at_k;
use atomrl::skills::{gold_completion, Skill};
use skills_support::*;
use std::process::Command;

#[test]
fn pass_at_k_matches_the_unbiased_estimator() {
    assert_eq!(pass_at_k(4, 0, 1), 0.0);
    assert_eq!(pass_at_k(4, 4, 1), 1.0);
    assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
    assert!((pass_at_k(4, 1, 2) - 0.5).abs() < 1e-12);
    assert!((pass_at_k(5, 2, 3) - 0.9).abs() < 1e-12); // 1 - C(3,3)/C(5,3)
}

#[test]
fn eval_grades_completions_and_prints_one_json_line_each_and_a_summary() {
    let all = corpus();
    let tasks: Vec<_> = all
        .iter()
        .filter(|t| matches!(t.skill, Skill::Localize | Skill::Review))
        .take(4)
        .cloned()
        .collect();
    if atomrl::sandbox::Sandbox::new(Default::default()).is_err() {
        eprintln!("SKIPPED eval: bwrap cannot run here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tasks_path = dir.path().join("tasks.jsonl");
    atomrl::skills::write_tasks(&tasks_path, &tasks).unwrap();
    let mut lines = Vec::new();
    for t in &tasks {
        lines.push(
            serde_json::json!({"instance_id": t.instance_id, "completion": gold_completion(t)})
                .to_string(),
        );
        lines.push(
            serde_json::json!({"instance_id": t.instance_id, "completion": "no idea"}).to_string(),
        );
    }
    lines.push("{broken".into());
    lines.push(serde_json::json!({"instance_id": "nope", "completion": ""}).to_string());
    let comp_path = dir.path().join("completions.jsonl");
    std::fs::write(&comp_path, lines.join("\n")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_atomrl"))
        .args(["eval", "--tasks"])
        .arg(&tasks_path)
        .arg("--completions")
        .arg(&comp_path)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("line 9") && stderr.contains("not in"),
        "{stderr}"
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * tasks.len() + 1);
    for pair in rows[..rows.len() - 1].chunks(2) {
        assert_eq!(pair[0]["reward"], 1.0, "{pair:?}");
        assert_eq!(pair[1]["reward"], 0.0);
        assert_eq!(pair[1]["reason"], "format");
    }
    let summary = &rows.last().unwrap()["summary"];
    for (_, s) in summary.as_object().unwrap() {
        assert_eq!(s["mean_reward"], 0.5);
        assert_eq!(s["k"], 2);
        assert_eq!(s["pass_at_1"], 0.5);
        assert_eq!(s["pass_at_k"], 1.0);
    }

    // The table form.
    let out = Command::new(env!("CARGO_BIN_EXE_atomrl"))
        .args(["eval", "--gold", "--tasks"])
        .arg(&tasks_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("pass@k") && table.contains("1.000"),
        "{table}"
    );
}
