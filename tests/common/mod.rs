//! Functions shared by the training tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use atomrl::backend::KlEstimator;
use atomrl::model::ModelConfig;
use atomrl::rl::objective::{next_tokens, ObjectiveConfig, PolicyRows};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub const FAMILIES: [&str; 3] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3"];

/// A fixture's `expected.safetensors`: name -> (shape, values).
pub type Expected = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Per-position values of the fixtures (position t < seq-1 of each sequence predicts token t+1)
/// as packed rows `b*seq + t`; the last row of each sequence is idle (0).
pub fn position_rows(per_pos: &[f32], tokens: usize, seq: usize) -> Vec<f32> {
    let mut out = vec![0.0; tokens];
    for (i, v) in per_pos.iter().enumerate() {
        out[(i / (seq - 1)) * seq + i % (seq - 1)] = *v;
    }
    out
}

/// The fixtures' GRPO case: the objective's settings from `expected.json` (`hp["grpo"]`) and the
/// per-row inputs (token-mean weights over the mask, per-sequence advantages, old and reference
/// log-probs) of the packed batch `ids` / `cu` of sequences of `seq` tokens.
pub fn grpo_case(expected: &Expected, hp: &serde_json::Value, ids: &[u32], cu: &[u32], seq: usize) -> (ObjectiveConfig, PolicyRows) {
    let g = &hp["grpo"];
    let cfg = ObjectiveConfig {
        temperature: g["temperature"].as_f64().unwrap() as f32,
        clip_low: g["eps_low"].as_f64().unwrap() as f32,
        clip_high: g["eps_high"].as_f64().unwrap() as f32,
        kl_coef: g["beta"].as_f64().unwrap() as f32,
        kl_estimator: KlEstimator::K3,
        chunk_rows: Some(5),
        ..ObjectiveConfig::default()
    };
    let rows_of = |per_pos: &[f32]| position_rows(per_pos, ids.len(), seq);
    let mask = &expected["grpo_mask"].1;
    let total: f32 = mask.iter().sum();
    let adv = &expected["grpo_advantages"].1;
    let rows = PolicyRows {
        targets: next_tokens(ids, cu),
        weights: rows_of(&mask.iter().map(|m| m / total).collect::<Vec<_>>()),
        advantages: rows_of(&(0..mask.len()).map(|i| adv[i / (seq - 1)]).collect::<Vec<_>>()),
        old_logp: Some(rows_of(&expected["grpo_old_logp"].1)),
        ref_logp: Some(rows_of(&expected["grpo_ref_logp"].1)),
        rollout_logp: None,
    };
    (cfg, rows)
}

/// max |a - b| over max |b| + floor: the whole tensor's error relative to its scale.
pub fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / (scale + floor)
}

/// A small deterministic generator for test data: the trainer's own SplitMix64.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        let mut rng = atomrl::rl::trainer::Rng(self.0);
        let x = rng.next_u64();
        self.0 = rng.0;
        x
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A tiny config of the given family with random-friendly sizes (odd-ish to catch layout bugs).
pub fn tiny_config(family: &str, vocab: usize) -> ModelConfig {
    let extra = match family {
        "qwen2" => r#""model_type": "qwen2", "tie_word_embeddings": true"#,
        "qwen3" => r#""model_type": "qwen3", "head_dim": 12, "tie_word_embeddings": true"#,
        _ => r#""model_type": "llama", "tie_word_embeddings": false"#,
    };
    let json = format!(
        r#"{{ {extra}, "vocab_size": {vocab}, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 64 }}"#
    );
    ModelConfig::from_json(&json).unwrap()
}

/// Random weights: matrices ~ U(-a, a) with `a = 1/sqrt(fan_in)`, norms near 1, biases small.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> atomrl::model::Weights<Vec<f32>> {
    let mut rng = TestRng(seed);
    atomrl::model::param_infos(cfg)
        .try_map(|p| {
            let n = p.numel();
            Ok(if p.shape.len() == 1 && p.name.contains("norm") {
                (0..n).map(|_| 1.0 + 0.2 * rng.uniform()).collect()
            } else if p.shape.len() == 1 {
                (0..n).map(|_| 0.1 * rng.uniform()).collect()
            } else {
                let a = 1.0 / (p.shape[1] as f32).sqrt();
                (0..n).map(|_| a * rng.uniform()).collect()
            })
        })
        .unwrap()
}
