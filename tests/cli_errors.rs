//! Bad input to the `atomrl` binary: one clear `error:` line and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Runs atomrl and returns its stderr, asserting the failure contract.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_atomrl")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "atomrl {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "atomrl {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "atomrl {args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "atomrl {args:?}: expected one error line, got {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    stderr
}

/// A model directory: the fixture's files, changed by `edit`.
fn model_dir(tmp: &Path, edit: impl FnOnce(&Path)) -> String {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    edit(&dir);
    dir.to_string_lossy().into_owned()
}

/// A word-level tokenizer over a tiny vocabulary, enough to drive the fixture model.
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"<unk>":0,"a":1,"b":2,"c":3,"d":4},"unk_token":"<unk>"}}"#;

#[test]
fn truncated_safetensors_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    let err = fails(&["generate", "--model", &dir, "--prompt", "a b", "--device", "cpu"]);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn unknown_model_type_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p).unwrap().replace("\"llama\"", "\"mamba\"");
        std::fs::write(&p, text).unwrap();
    });
    let err = fails(&["generate", "--model", &dir, "--prompt", "a b", "--device", "cpu"]);
    assert!(err.contains("mamba"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p).unwrap().replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
        std::fs::write(&p, text).unwrap();
    });
    let err = fails(&["generate", "--model", &dir, "--prompt", "a b", "--device", "cpu"]);
    assert!(err.contains("model.layers.2.") && err.contains("missing"), "{err}");
}

#[test]
fn empty_prompt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |_| {});
    let err = fails(&["generate", "--model", &dir, "--prompt", "", "--device", "cpu"]);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |_| {});
    let long = vec!["a"; 300].join(" ");
    let err = fails(&["generate", "--model", &dir, "--prompt", &long, "--device", "cpu"]);
    assert!(err.contains("context"), "{err}");
}

#[test]
fn a_good_request_succeeds_with_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), |_| {});
    let out = Command::new(env!("CARGO_BIN_EXE_atomrl"))
        .args(["generate", "--model", &dir, "--prompt", "a b c", "--prompt", "d", "--max-new-tokens", "5", "--json", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["prompt_ids"], serde_json::json!([1, 2, 3]));
    assert_eq!(lines[0]["completion_ids"].as_array().unwrap().len(), 5);
    assert_eq!(lines[1]["completion_logprobs"].as_array().unwrap().len(), 5);
}
