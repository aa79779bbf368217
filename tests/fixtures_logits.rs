//! The forward pass against transformers' logits for the three tiny fixture models.

use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::model::checkpoint::read_all;
use atomrl::model::{KvCache, Model};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// max |a-b| / max |b|: the relative error over the whole tensor.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(name: &str) {
    let dir = fixture(name);
    let expected = read_all(&dir.join("expected.safetensors")).unwrap();
    let (ids_shape, ids) = &expected["input_ids"];
    let (batch, seq) = (ids_shape[0], ids_shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let (_, want) = &expected["logits"];
    let model = Model::load(&Cpu, &dir).unwrap();
    let vocab = model.config.vocab_size;

    // Through the paged cache, all sequences in one call.
    let mut cache = KvCache::new(&Cpu, &model.config, batch * (seq + 4), 4).unwrap();
    let entries: Vec<(u64, &[u32])> = (0..batch).map(|b| (b as u64, &ids[b * seq..(b + 1) * seq])).collect();
    let got = model.forward_cached(&Cpu, &mut cache, &entries, true).unwrap();
    let err = rel_err(&got, want);
    assert!(err < 1e-4, "{name}: cached forward logits relative error {err}");

    // Through the training forward (packed, causal).
    let cu: Vec<u32> = (0..=batch).map(|b| (b * seq) as u32).collect();
    let fwd = model.forward_train(&Cpu, &ids, &cu, false).unwrap();
    let rows: Vec<usize> = (0..batch * seq).collect();
    let got = model.logits(&Cpu, &fwd.x_final, &rows).unwrap();
    let err = rel_err(&got, want);
    assert!(err < 1e-4, "{name}: training forward logits relative error {err}");
    assert_eq!(got.len(), batch * seq * vocab);
}

#[test]
fn tiny_llama_logits_match_transformers() {
    check("tiny-llama");
}

#[test]
fn tiny_qwen2_logits_match_transformers() {
    check("tiny-qwen2");
}

#[test]
fn tiny_qwen3_logits_match_transformers() {
    check("tiny-qwen3");
}
