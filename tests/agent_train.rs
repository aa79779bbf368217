//! `atomrl train` in agent mode on SmolLM2 with the demo's agent config: one step of episodes
//! in sandboxed repositories, the agent metrics in metrics.jsonl. Slow: runs with
//! `ATOMRL_FULL=1`, the converted model, and a sandbox that works.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn train_runs_the_demo_skills_in_agent_mode() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join(".cache/smollm2/hf");
    if !(std::env::var("ATOMRL_FULL").is_ok_and(|v| v == "1") && model.join("model.safetensors").exists()) {
        eprintln!("skipped: needs ATOMRL_FULL=1 and {} (scripts/fetch-smollm2.sh)", model.display());
        return;
    }
    if let Err(e) = atomrl::sandbox::Sandbox::new(Default::default()) {
        eprintln!("skipped: the sandbox cannot run here: {e:#}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atomrl"))
        .current_dir(&root)
        .args(["train", "--config", "configs/demo-agent.toml", "--output"])
        .arg(dir.path().join("run"))
        .arg(format!("model.path={}", model.display()))
        .args(["trainer.max_steps=1", "eval.before_and_after=false", "rollout.group_size=2", "agent.max_turns=2", "agent.turn_tokens=48"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let m: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(m["step"], 1);
    for key in ["num_turns/mean", "tools/failure_rate", "episode/timeout_frac", "tools/submit/calls", "reward/mean"] {
        assert!(m[key].is_number(), "{key} missing from {m}");
    }
    let turns = m["num_turns/mean"].as_f64().unwrap();
    assert!((1.0..=2.0).contains(&turns), "num_turns/mean {turns}");
}
