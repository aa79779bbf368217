//! The SFT step's loss and gradients: with every row in the mask, `Trainer::step_ce` gives the
//! PyTorch fixtures' `ce_loss` and `ce_grad.*` (also when the batch is split into micro-batches);
//! with a partial mask, the mean of `-log softmax(logits)[target]` over the masked rows computed
//! here in f64 from the fixtures' logits; and targets outside the mask have no effect at all.

mod common;

use std::collections::BTreeMap;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::LossGrads;
use atomrl::model::checkpoint::read_all;
use atomrl::model::{param_infos, Model};
use atomrl::rl::objective::{cross_entropy, next_tokens};
use atomrl::rl::trainer::{MicroBatch, TrainConfig, Trainer};

use common::{fixture, rel_err, FAMILIES};

type Expected = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

struct Fixture {
    expected: Expected,
    ids: Vec<u32>,
    seq: usize,
    batch: usize,
    vocab: usize,
}

fn load(name: &str) -> Fixture {
    let expected = read_all(&fixture(name).join("expected.safetensors")).unwrap();
    let (shape, ids) = &expected["input_ids"];
    let ids = ids.iter().map(|&x| x as u32).collect();
    let vocab = expected["logits"].0[2];
    Fixture { ids, seq: shape[1], batch: shape[0], vocab, expected }
}

fn trainer(name: &str) -> Trainer<Cpu> {
    let dir = fixture(name);
    Trainer::new(&Cpu, Model::load(&Cpu, &dir).unwrap(), TrainConfig::default(), &dir).unwrap()
}

/// Micro-batches holding sequences `groups[k]` each; `mask(b, t)` for the row of position `t`.
fn batches(f: &Fixture, groups: &[&[usize]], mask: impl Fn(usize, usize) -> f32) -> Vec<MicroBatch> {
    groups
        .iter()
        .map(|g| {
            let mut m = MicroBatch { cu_seqlens: vec![0], ..MicroBatch::default() };
            for &b in *g {
                m.tokens.extend(&f.ids[b * f.seq..(b + 1) * f.seq]);
                m.mask.extend((0..f.seq).map(|t| if t + 1 < f.seq { mask(b, t) } else { 0.0 }));
                m.cu_seqlens.push(m.tokens.len() as u32);
                m.advantages.push(0.0);
            }
            m
        })
        .collect()
}

#[test]
fn full_mask_matches_the_fixture_cross_entropy() {
    for name in FAMILIES {
        let f = load(name);
        let want = f.expected["ce_loss"].1[0];
        for groups in [&[&[0usize, 1, 2][..]][..], &[&[0], &[1, 2]]] {
            let mut t = trainer(name);
            let r = t.step_ce(&Cpu, &batches(&f, groups, |_, _| 1.0)).unwrap();
            assert!(((r.policy.loss - want) / want).abs() < 1e-4, "{name}: loss {} vs {want}", r.policy.loss);
            assert_eq!(r.policy.tokens, f.batch * (f.seq - 1));
            let grads = t.grads().unwrap();
            for (info, g) in param_infos(&t.model.config).zip(grads) {
                let (_, w) = &f.expected[&format!("ce_grad.{}", info.name)];
                let err = rel_err(g, w, 1e-6);
                assert!(err < 1e-3, "{name} {groups:?}: ce_grad.{} relative error {err}", info.name);
            }
        }
    }
}

#[test]
fn partial_mask_is_the_mean_over_masked_rows() {
    for name in FAMILIES {
        let f = load(name);
        let mask = |b: usize, t: usize| if (b == 0 && (4..11).contains(&t)) || (b == 1 && t < 3) || (b == 2 && t == 15) { 1.0 } else { 0.0 };
        let logits = &f.expected["logits"].1;
        let (mut sum, mut n) = (0f64, 0);
        for b in 0..f.batch {
            for t in 0..f.seq - 1 {
                if mask(b, t) == 0.0 {
                    continue;
                }
                let row = &logits[(b * f.seq + t) * f.vocab..(b * f.seq + t + 1) * f.vocab];
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                sum += lse - row[f.ids[b * f.seq + t + 1] as usize] as f64;
                n += 1;
            }
        }
        let want = (sum / n as f64) as f32;
        let mut t = trainer(name);
        let r = t.step_ce(&Cpu, &batches(&f, &[&[0, 2], &[1]], mask)).unwrap();
        assert_eq!(r.policy.tokens, n);
        assert!(((r.policy.loss - want) / want).abs() < 1e-4, "{name}: loss {} vs {want}", r.policy.loss);
    }
}

#[test]
fn targets_outside_the_mask_change_nothing() {
    let f = load("tiny-llama");
    let model = Model::load(&Cpu, &fixture("tiny-llama")).unwrap();
    let c = &model.config;
    let b = &batches(&f, &[&[0, 1, 2]], |b, t| if b == 1 && t > 5 { 1.0 } else { 0.0 })[0];
    let n: f32 = b.mask.iter().sum();
    let weights: Vec<f32> = b.mask.iter().map(|m| m / n).collect();
    let fwd = model.forward_train(&Cpu, &b.tokens, &b.cu_seqlens, true).unwrap();
    let run = |targets: &[u32]| {
        let mut grads = model.zero_grads(&Cpu).unwrap();
        let mut dh = vec![0.0; fwd.hidden.len()];
        let (_, s) = cross_entropy(&Cpu, &fwd.hidden, model.weights.head(), c.hidden_size, c.vocab_size, targets, &weights, 7, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() })).unwrap();
        model.backward(&Cpu, &fwd, &dh, &mut grads).unwrap();
        (s.metrics().loss, dh, grads.visit().into_iter().cloned().collect::<Vec<_>>())
    };
    let targets = next_tokens(&b.tokens, &b.cu_seqlens);
    let mut other = targets.clone();
    for (r, t) in other.iter_mut().enumerate() {
        if weights[r] == 0.0 {
            *t = (*t + 1 + r as u32) % c.vocab_size as u32;
        }
    }
    assert_ne!(targets, other);
    let (l0, dh0, g0) = run(&targets);
    let (l1, dh1, g1) = run(&other);
    assert_eq!(l0, l1);
    assert_eq!(dh0, dh1);
    assert!(g0 == g1, "gradients differ");
    // Rows outside the mask send no gradient into the hidden states.
    for (r, w) in weights.iter().enumerate() {
        if *w == 0.0 {
            assert!(dh0[r * c.hidden_size..(r + 1) * c.hidden_size].iter().all(|&x| x == 0.0), "row {r}");
        }
    }
}
