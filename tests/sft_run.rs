//! `atomrl sft` end to end on the tiny-qwen3 fixture with a word-level chat template: a few
//! hundred steps on four transcripts drive the loss near zero and greedy decoding reproduces
//! every assistant turn; a run stopped after step k and resumed ends with the weights and losses
//! of an uninterrupted one; the example order is a fresh permutation every epoch.

mod sft_support;

use std::path::Path;

use atomrl::backend::cpu::Cpu;
use atomrl::model::checkpoint::read_all;
use atomrl::model::Model;
use atomrl::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};
use atomrl::sft::run::{load_config, ExampleStream};
use atomrl::sft::{sft, SftConfig, SftOptions};
use atomrl::tokenizer::Tokenizer;

use sft_support::{examples, model_dir, write_examples, TEMPLATE};

fn config(tmp: &Path, extra: &[&str]) -> SftConfig {
    let model = model_dir(&tmp.join("model"), TEMPLATE, true);
    let data = tmp.join("train.jsonl");
    write_examples(&data);
    let mut o = vec![
        format!("model.path={:?}", model.display().to_string()),
        "model.device=\"cpu\"".into(),
        format!("data.train=[{:?}]", data.display().to_string()),
        "data.max_tokens=64".into(),
        "optimizer.weight_decay=0.0".into(),
        "trainer.seed=7".into(),
        "checkpoint.keep_last=2".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    load_config(None, &o).unwrap()
}

fn losses(dir: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().get("loss").and_then(|v| v.as_f64())).collect()
}

#[test]
fn overfits_four_transcripts_and_greedy_decoding_reproduces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &["trainer.max_steps=200", "trainer.batch_size=4", "trainer.micro_batch_tokens=32", "schedule.lr=3e-3", "schedule.warmup_steps=10", "checkpoint.every=1000"]);
    let out = tmp.path().join("run");
    let done = sft(&Cpu, &cfg, &SftOptions { output: out.clone(), resume: false, stop_after: None }).unwrap();
    let l = losses(&out);
    assert_eq!(l.len(), 200);
    assert!(l[0] > 2.0 && *l.last().unwrap() < 0.05, "first loss {} last {}", l[0], l.last().unwrap());

    let final_dir = done.final_dir.unwrap();
    assert_eq!(final_dir, out.join("step_200"));
    let model = Model::load(&Cpu, &final_dir).unwrap();
    let tok = Tokenizer::from_dir(&final_dir).unwrap();
    let mut requests = Vec::new();
    let mut want = Vec::new();
    for messages in examples() {
        for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let prompt = tok.encode(&tok.apply_chat_template(&messages[..i], true).unwrap()).unwrap();
            let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: 6, ..SamplingConfig::default() };
            requests.push(GenRequest { id: requests.len() as u32, prompt, sampling });
            want.push(format!("{} <eot>", m.content));
        }
    }
    let opts = EngineOptions { max_batch: 8, stop_ids: tok.stop_ids.clone(), ..EngineOptions::default() };
    let mut got = generate(&Cpu, &model, requests, &opts, None, |_, _| {}).unwrap();
    got.sort_by_key(|c| c.id);
    let texts: Vec<String> = got.iter().map(|c| tok.decode(&c.completion_ids).unwrap()).collect();
    assert_eq!(texts, want);
}

#[test]
fn resume_gives_the_weights_of_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Two examples a step over four examples: the order is reshuffled three times.
    let cfg = config(tmp.path(), &["trainer.max_steps=7", "trainer.batch_size=2", "trainer.micro_batch_tokens=24", "schedule.lr=1e-2", "schedule.decay=\"cosine\"", "schedule.total_steps=7", "schedule.warmup_steps=2", "checkpoint.every=3"]);
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    sft(&Cpu, &cfg, &SftOptions { output: full.clone(), resume: false, stop_after: None }).unwrap();
    // Killed after step 5: the last checkpoint is step 3, so steps 4 and 5 are redone.
    sft(&Cpu, &cfg, &SftOptions { output: split.clone(), resume: false, stop_after: Some(5) }).unwrap();
    assert_eq!(std::fs::read_to_string(split.join("latest")).unwrap().trim(), "step_3");
    let err = sft(&Cpu, &cfg, &SftOptions { output: split.clone(), resume: false, stop_after: None }).err().expect("refuses to overwrite");
    assert!(err.to_string().contains("--resume"), "{err}");
    sft(&Cpu, &cfg, &SftOptions { output: split.clone(), resume: true, stop_after: None }).unwrap();

    assert_eq!(losses(&full), losses(&split));
    assert_eq!(losses(&full).len(), 7);
    let a = read_all(&full.join("step_7/model.safetensors")).unwrap();
    let b = read_all(&split.join("step_7/model.safetensors")).unwrap();
    assert!(a == b, "weights differ after resuming");
}

#[test]
fn every_epoch_is_a_fresh_permutation() {
    let mut s = ExampleStream::new(5, 3);
    let epochs: Vec<Vec<usize>> = (0..3).map(|e| (0..5).map(|i| s.at(e * 5 + i)).collect()).collect();
    for e in &epochs {
        let mut sorted = e.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
    }
    assert!(epochs[0] != epochs[1] || epochs[1] != epochs[2]);
    // The same position gives the same example whatever was asked before.
    assert_eq!(ExampleStream::new(5, 3).at(7), epochs[1][2]);
}
