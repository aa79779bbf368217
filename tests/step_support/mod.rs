//! One optimizer step's inputs from a fixture model (`tests/fixtures/<name>`), shared by the
//! tests that run the same trainer step on two backends: the model's weights rounded to bf16
//! (so a bf16 backend starts from exactly the weights the f32 one has), the GRPO batch of the
//! fixture split into two micro-batches, a cross-entropy batch over its completions, and the
//! fixture's objective and AdamW hyper-parameters.
#![allow(dead_code)]

use std::path::PathBuf;

use atomrl::backend::{Backend, KlEstimator};
use atomrl::model::checkpoint::{load_weights, read_all};
use atomrl::model::{ModelConfig, Weights};
use atomrl::rl::objective::ObjectiveConfig;
use atomrl::rl::optimizer::AdamWConfig;
use atomrl::rl::schedule::LrSchedule;
use atomrl::rl::trainer::{MicroBatch, StepReport, TrainConfig, Trainer};
use serde_json::Value;

pub struct StepCase {
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// The fixture's weights rounded to bf16 (exactly representable in both storage types).
    pub host: Weights<Vec<f32>>,
    /// Sequences 0 and 1, then sequence 2: two micro-batches of one step.
    pub grpo: Vec<MicroBatch>,
    /// The same sequences with every completion token in the loss (for `step_ce`).
    pub sft: Vec<MicroBatch>,
    pub train: TrainConfig,
}

pub fn bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn num(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

/// The step inputs of fixture `name` (see the module header).
pub fn step_case(name: &str) -> StepCase {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let host = load_weights(&dir, &config).unwrap().try_map(|w| Ok(w.iter().map(|&x| bf16(x)).collect())).unwrap();
    let expected = read_all(&dir.join("expected.safetensors")).unwrap();
    let hp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (shape, ids) = &expected["input_ids"];
    let (batch, seq) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    // Per-position tensors are [batch, seq-1]: position t of sequence b predicts token t+1.
    let rows = |b: usize, key: &str| -> Vec<f32> {
        let v = &expected[key].1;
        let mut out = v[b * (seq - 1)..(b + 1) * (seq - 1)].to_vec();
        out.push(0.0);
        out
    };
    let prompt_len: Vec<usize> = hp["prompt_len"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let mut grpo = Vec::new();
    let mut sft = Vec::new();
    for seqs in [0..2, 2..batch] {
        let (mut g, mut s) = (MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() }, MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() });
        let (mut old, mut reference) = (Vec::new(), Vec::new());
        for b in seqs {
            let toks = &ids[b * seq..(b + 1) * seq];
            for m in [&mut g, &mut s] {
                m.tokens.extend(toks);
                m.cu_seqlens.push(m.tokens.len() as u32);
            }
            g.mask.extend(rows(b, "grpo_mask"));
            g.advantages.push(expected["grpo_advantages"].1[b]);
            old.extend(rows(b, "grpo_old_logp"));
            reference.extend(rows(b, "grpo_ref_logp"));
            s.mask.extend((0..seq).map(|r| if r + 1 >= prompt_len[b] && r + 1 < seq { 1.0 } else { 0.0 }));
        }
        g.old_logp = Some(old);
        g.ref_logp = Some(reference);
        grpo.push(g);
        sft.push(s);
    }
    let (o, a) = (&hp["grpo"], &hp["adamw"]);
    let train = TrainConfig {
        objective: ObjectiveConfig {
            temperature: num(&o["temperature"]),
            clip_low: num(&o["eps_low"]),
            clip_high: num(&o["eps_high"]),
            kl_coef: num(&o["beta"]),
            kl_estimator: KlEstimator::K3,
            // several chunks per micro-batch
            chunk_rows: Some(5),
            ..ObjectiveConfig::default()
        },
        optimizer: AdamWConfig { beta1: num(&a["beta1"]), beta2: num(&a["beta2"]), eps: num(&a["eps"]), weight_decay: num(&a["weight_decay"]), max_grad_norm: Some(1.0), no_decay_1d: false },
        schedule: LrSchedule { lr: num(&a["lr"]), ..LrSchedule::default() },
        seed: 7,
        keep_last: 2,
        ..TrainConfig::default()
    };
    StepCase { dir, config, host, grpo, sft, train }
}

/// A trainer on `case`'s model (master weights, where kept, exactly `case.host`).
pub fn trainer<B: Backend>(be: &B, case: &StepCase) -> Trainer<B> {
    Trainer::from_host(be, case.config.clone(), &case.host, case.train.clone(), &case.dir).unwrap()
}

/// One optimizer step of `case` on `t`: GRPO, or cross-entropy when `ce`.
pub fn run_step<B: Backend>(be: &B, t: &mut Trainer<B>, case: &StepCase, ce: bool) -> StepReport {
    if ce {
        t.step_ce(be, &case.sft).unwrap()
    } else {
        t.step(be, &case.grpo).unwrap()
    }
}

/// Every tensor of `w` as host f32.
pub fn host<B: Backend>(be: &B, w: &Weights<B::Tensor>) -> Weights<Vec<f32>> {
    w.try_map(|t| be.to_f32(t)).unwrap()
}
