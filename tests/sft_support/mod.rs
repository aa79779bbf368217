//! A tiny chat model for the SFT tests: the `tiny-qwen3` fixture with a word-level tokenizer and
//! a minimal chat template (`role : content <eot>` per turn).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use atomrl::tokenizer::ChatMessage;

pub const WORDS: &[&str] = &[
    "user", "assistant", "system", "tool", ":", "what", "color", "is", "the", "sky", "grass", "name", "a", "fruit", "blue", "green", "apple",
    "banana", "count", "more", "one", "two", "three", "four", "you", "help", "ls", "file.py", "list", "files",
];

/// `tokenizer.json`: `<unk>` 0, `<bos>` 1, `<eot>` 2 (an added special token), then [`WORDS`].
pub fn tokenizer_json() -> String {
    let mut vocab = vec![r#""<unk>":0"#.to_string(), r#""<bos>":1"#.to_string(), r#""<eot>":2"#.to_string()];
    for (i, w) in WORDS.iter().enumerate() {
        vocab.push(format!("\"{w}\":{}", i + 3));
    }
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{{"id":2,"content":"<eot>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],
"normalizer":null,"pre_tokenizer":{{"type":"WhitespaceSplit"}},"post_processor":null,"decoder":null,
"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"<unk>"}}}}"#,
        vocab.join(",")
    )
}

pub const TEMPLATE: &str = "{% for m in messages %}{{ m.role }} : {{ m.content }} <eot> {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}";

/// Writes a model directory with the tokenizer, the template and (when `with_model`) the
/// tiny-qwen3 fixture's weights.
pub fn model_dir(dir: &Path, template: &str, with_model: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    let cfg = serde_json::json!({ "chat_template": template, "eos_token": "<eot>", "bos_token": "<bos>" });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    if with_model {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen3");
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
        }
    }
    dir.to_path_buf()
}

pub fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Four small transcripts, one with two assistant turns.
pub fn examples() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![msg("user", "what color is the sky"), msg("assistant", "blue")],
        vec![msg("system", "you help"), msg("user", "what color is grass"), msg("assistant", "green")],
        vec![msg("user", "name a fruit"), msg("assistant", "apple banana")],
        vec![msg("user", "count"), msg("assistant", "one two"), msg("user", "more"), msg("assistant", "three four")],
    ]
}

/// The examples as a JSONL file.
pub fn write_examples(path: &Path) {
    let lines: Vec<String> = examples().into_iter().map(|m| serde_json::json!({ "messages": m }).to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}
