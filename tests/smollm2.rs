//! SmolLM2-135M-Instruct converted from the GGUF that `scripts/fetch-smollm2.sh` fetches:
//! greedy decoding of the France prompt gives what transformers gives on the same weights.
//! Skipped (with a message) when the converted model is absent.

use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::model::Model;
use atomrl::rollout::{generate, EngineOptions, FinishReason, GenRequest, SamplingConfig};
use atomrl::tokenizer::{ChatMessage, Tokenizer};

fn smollm2() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} not found (run scripts/fetch-smollm2.sh)", dir.display());
        None
    }
}

const PROMPT: &str = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn greedy_france_answer_matches_transformers() {
    let Some(dir) = smollm2() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let model = Model::load(&Cpu, &dir).unwrap();
    let prompt = tok.encode(PROMPT).unwrap();
    let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: 32, ..SamplingConfig::default() };
    let opts = EngineOptions { stop_ids: tok.stop_ids.clone(), ..EngineOptions::default() };
    let out = generate(&Cpu, &model, vec![GenRequest { id: 0, prompt, sampling }], &opts, Some(&tok), |_, _| {}).unwrap();
    let text = tok.decode(&out[0].completion_ids).unwrap();
    assert_eq!(text, "The capital of France is Paris.<|im_end|>");
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
}

#[test]
fn chat_template_renders_the_france_prompt() {
    let Some(dir) = smollm2() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let text = tok.apply_chat_template(&[ChatMessage::new("user", "What is the capital of France?")], true).unwrap();
    assert!(text.ends_with(PROMPT), "{text:?}");
}
