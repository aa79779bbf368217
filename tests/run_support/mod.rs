//! A whole training run in miniature: a tiny random llama with a word-level tokenizer and a
//! minimal chat template, a verifiable localize task set (which file does the issue name?), and a
//! run config for it, all written into a temporary directory in milliseconds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use atomrl::model::checkpoint::{save_model_dir, SaveDtype};
use atomrl::model::ModelConfig;
use atomrl::rl::environment::Environment;
use atomrl::skills::{localize, Grade, Task};

#[path = "../common/mod.rs"]
mod common;

/// The whole vocabulary: every other word of a prompt is `<unk>`.
pub const VOCAB: [&str; 13] = [
    "<unk>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "Issue:", "Repository:", "alpha", "beta", "gamma",
    "alpha.py", "beta.py", "gamma.py",
];

/// The issue words; the task with issue `w` is solved by answering `w.py`.
pub const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Hidden size of the tiny llama (4 heads of 8); the CUDA kernels need heads of 16 or more.
pub const HIDDEN: usize = 32;

fn model_config_json(hidden: usize) -> String {
    format!(
        r#"{{"model_type": "llama", "tie_word_embeddings": false, "vocab_size": {}, "hidden_size": {hidden}, "intermediate_size": {},
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 256, "hidden_act": "silu", "eos_token_id": 1}}"#,
        VOCAB.len(),
        2 * hidden
    )
}

fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB.iter().enumerate().map(|(i, w)| (w.to_string(), i.into())).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

const CHAT_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}";

/// Writes a Hugging Face model directory with random weights drawn from `seed`.
pub fn write_model(dir: &Path, seed: u64) -> ModelConfig {
    write_model_sized(dir, seed, HIDDEN)
}

/// As [`write_model`], with hidden size `hidden` (4 heads of `hidden / 4`).
pub fn write_model_sized(dir: &Path, seed: u64, hidden: usize) -> ModelConfig {
    std::fs::create_dir_all(dir).unwrap();
    let json = model_config_json(hidden);
    let cfg = ModelConfig::from_json(&json).unwrap();
    let weights = common::random_weights(&cfg, seed);
    save_model_dir(dir, &cfg, &weights, dir, SaveDtype::F32).unwrap();
    std::fs::write(dir.join("config.json"), json).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    let tc = serde_json::json!({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    cfg
}

/// One localize task per issue word; the repository view lists every file. The word is repeated
/// so that a random model's near-uniform attention already carries some of it.
pub fn write_tasks(path: &Path) {
    let lines: Vec<String> = NAMES
        .iter()
        .map(|w| {
            serde_json::json!({
                "instance_id": format!("tiny__{w}.localize"), "skill": "localize", "problem_statement": vec![*w; 32].join(" "),
                "gold_locations": [format!("{w}.py")], "context": {"repo_view": "alpha.py\nbeta.py\ngamma.py"}
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A model, a task file and a run config under `root`; returns the config's path.
pub fn write_run(root: &Path, extra: &str) -> PathBuf {
    write_model(&root.join("model"), 7);
    write_tasks(&root.join("tasks.jsonl"));
    let path = root.join("run.toml");
    let text = format!(
        r#"[model]
path = "{model}"
device = "cpu"

[data]
train = ["{tasks}"]
eval = ["{tasks}"]

[rollout]
group_size = 8
prompts_per_step = 6
max_prompt_tokens = 256
max_response_tokens = 3
temperature = 1.0
max_batch = 32

[objective]
temperature = 1.0

[advantages]
filter_zero_std = true

[optimizer]
weight_decay = 0.0
max_grad_norm = 1.0

[schedule]
lr = 0.005

[trainer]
max_steps = 60
seed = 3
micro_batch_tokens = 4096

[eval]
temperature = 0.0

[checkpoint]
every = 0
keep_last = 2

[grading]
workers = 2
{extra}"#,
        model = root.join("model").display(),
        tasks = root.join("tasks.jsonl").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Every line of a run directory's metrics.jsonl.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The localize skill's pure-text grade, without the sandbox the full grader sets up.
pub fn text_grade(task: &Task, completion: &str) -> Grade {
    let o = localize::grade(task, completion);
    Grade { reward: o.reward, reason: o.reason.as_str().into(), detail: o.detail, metrics: o.metrics, timings: Default::default() }
}

/// The localize grader, without the sandbox.
pub struct Localize;

impl Environment for Localize {
    fn grade_batch(&self, items: &[(&Task, &str)]) -> Vec<Grade> {
        items.iter().map(|(t, c)| text_grade(t, c)).collect()
    }
}

/// The checks of a run of [`write_run`]'s task that must have learned it: `steps` lines, reward
/// near chance over the first 3 steps and above 0.8 over the last 5, greedy answers all right
/// at the end, no update skipped. Returns the largest rollout/trainer log-prob mismatch.
pub fn assert_learned(m: &[serde_json::Value], steps: usize) -> f64 {
    let rewards: Vec<f64> = m.iter().map(|l| l["reward/mean"].as_f64().unwrap()).collect();
    eprintln!("rewards per step: {:?}", rewards.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>());
    assert_eq!(m.len(), steps);
    let head: f64 = rewards[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = rewards[rewards.len() - 5..].iter().sum::<f64>() / 5.0;
    // Chance: the first answer token is the right one of 13.
    assert!(head < 0.35, "the random model already solves the task: {rewards:?}");
    assert!(tail > 0.8, "mean reward of the last 5 steps is {tail:.3}: {rewards:?}");
    let last = m.last().unwrap();
    assert_eq!(last["eval/localize/avg@1"].as_f64(), Some(1.0), "greedy answers after training: {last}");
    assert!(m.iter().all(|l| l["train/skipped_updates"].as_f64() == Some(0.0)));
    m.iter().filter_map(|l| l["rollout/logprob_mismatch"].as_f64()).fold(0.0, f64::max)
}
