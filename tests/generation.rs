//! Generation on the tiny fixture models: the KV cache against full recomputation, continuous
//! batching against one-at-a-time generation, sampling filters, and bad requests.

use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{Backend, SampleParams};
use atomrl::model::{KvCache, Model};
use atomrl::rollout::{generate, EngineOptions, FinishReason, GenRequest, SamplingConfig};

fn model(name: &str) -> Model<Cpu> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Model::load(&Cpu, &dir).unwrap()
}

fn full_logits(m: &Model<Cpu>, ids: &[u32]) -> Vec<f32> {
    let fwd = m.forward_train(&Cpu, ids, &[0, ids.len() as u32], false).unwrap();
    m.logits(&Cpu, &fwd.x_final, &[ids.len() - 1]).unwrap()
}

#[test]
fn decoding_with_the_cache_matches_recomputation() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        let m = model(name);
        let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 90).collect();
        let mut cache = KvCache::new(&Cpu, &m.config, 64, 4).unwrap();
        // Prefill 5 tokens, then one token at a time.
        let mut got = m.forward_cached(&Cpu, &mut cache, &[(0, &ids[..5])], false).unwrap();
        for n in 5..=ids.len() {
            let want = full_logits(&m, &ids[..n]);
            let err = got.iter().zip(&want).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err < 1e-4, "{name}: length {n}: max |diff| {err}");
            if n < ids.len() {
                got = m.forward_cached(&Cpu, &mut cache, &[(0, &ids[n..n + 1])], false).unwrap();
            }
        }
    }
}

fn greedy(max_new: usize) -> SamplingConfig {
    SamplingConfig { temperature: 0.0, max_new_tokens: max_new, ..SamplingConfig::default() }
}

#[test]
fn greedy_generation_is_the_argmax_of_recomputed_logits() {
    let m = model("tiny-qwen3");
    let prompt = vec![5u32, 17, 42, 8];
    let out = generate(&Cpu, &m, vec![GenRequest { id: 0, prompt: prompt.clone(), sampling: greedy(10) }], &EngineOptions::default(), None, |_, _| {}).unwrap();
    let mut seq = prompt.clone();
    for (i, &tok) in out[0].completion_ids.iter().enumerate() {
        let logits = full_logits(&m, &seq);
        let best = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a))).unwrap() as u32;
        assert_eq!(tok, best, "token {i}");
        let lse = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((out[0].completion_logprobs[i] - (logits[best as usize] - lse)).abs() < 1e-4);
        seq.push(tok);
    }
    assert_eq!(out[0].completion_ids.len(), 10);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
}

#[test]
fn continuous_batching_gives_the_same_tokens_as_one_at_a_time() {
    let m = model("tiny-llama");
    let sampling = SamplingConfig { temperature: 0.9, top_p: 0.95, seed: 7, max_new_tokens: 12, ..SamplingConfig::default() };
    let reqs = || -> Vec<GenRequest> {
        (0..5u32).map(|i| GenRequest { id: i, prompt: (0..(3 + i * 2)).map(|j| (j * 11 + i) % 96).collect(), sampling: sampling.clone() }).collect()
    };
    let opts = EngineOptions { max_batch: 2, block_size: 4, stop_ids: vec![2] };
    let batched = generate(&Cpu, &m, reqs(), &opts, None, |_, _| {}).unwrap();
    for r in reqs() {
        let id = r.id;
        let alone = generate(&Cpu, &m, vec![r], &opts, None, |_, _| {}).unwrap();
        assert_eq!(alone[0].completion_ids, batched[id as usize].completion_ids, "request {id}");
        for (a, b) in alone[0].completion_logprobs.iter().zip(&batched[id as usize].completion_logprobs) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}

fn params(temperature: f32, top_k: u32, top_p: f32, min_p: f32, step: u32) -> SampleParams {
    SampleParams { temperature, top_k, top_p, min_p, seed: 3, stream: 1, step }
}

#[test]
fn filters_that_keep_one_token_are_greedy() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1).collect();
    let best = (0..50).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u32;
    for step in 0..20 {
        for p in [params(1.0, 1, 1.0, 0.0, step), params(1.0, 0, 1e-6, 0.0, step), params(1.0, 0, 1.0, 1.0, step), params(0.0, 0, 1.0, 0.0, step)] {
            assert_eq!(Cpu.sample(&logits, 50, &[p]).unwrap()[0].token, best, "{p:?}");
        }
    }
}

#[test]
fn sampling_follows_the_tempered_distribution_and_its_filters() {
    let logits = vec![2.0f32, 1.0, 0.5, 0.0, -1.0];
    let t = 0.7;
    let z: f32 = logits.iter().map(|x| (x / t).exp()).sum();
    let probs: Vec<f32> = logits.iter().map(|x| (x / t).exp() / z).collect();
    let n = 20000;
    let mut counts = [0usize; 5];
    for step in 0..n {
        let s = Cpu.sample(&logits, 5, &[params(t, 0, 1.0, 0.0, step)]).unwrap()[0];
        counts[s.token as usize] += 1;
        assert!((s.logprob - probs[s.token as usize].ln()).abs() < 1e-5);
    }
    for i in 0..5 {
        let freq = counts[i] as f32 / n as f32;
        // Four standard deviations of a binomial frequency.
        let sd = (probs[i] * (1.0 - probs[i]) / n as f32).sqrt();
        assert!((freq - probs[i]).abs() < 4.0 * sd + 1e-3, "token {i}: {freq} vs {}", probs[i]);
    }
    // top-k 2 and top-p 0.8 keep only the two most likely tokens here (p0 + p1 > 0.8).
    assert!(probs[0] + probs[1] > 0.8 && probs[0] < 0.8);
    for p in [params(t, 2, 1.0, 0.0, 0), params(t, 0, 0.8, 0.0, 0)] {
        let seen: std::collections::BTreeSet<u32> = (0..2000).map(|step| Cpu.sample(&logits, 5, &[SampleParams { step, ..p }]).unwrap()[0].token).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1], "{p:?}");
    }
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let m = model("tiny-llama");
    let empty = generate(&Cpu, &m, vec![GenRequest { id: 0, prompt: vec![], sampling: greedy(4) }], &EngineOptions::default(), None, |_, _| {});
    assert!(format!("{:#}", empty.unwrap_err()).contains("empty"));
    let long = generate(&Cpu, &m, vec![GenRequest { id: 0, prompt: vec![1; 500], sampling: greedy(4) }], &EngineOptions::default(), None, |_, _| {});
    assert!(format!("{:#}", long.unwrap_err()).contains("context"));
    let bad = generate(&Cpu, &m, vec![GenRequest { id: 0, prompt: vec![1], sampling: SamplingConfig { top_p: 0.0, ..greedy(4) } }], &EngineOptions::default(), None, |_, _| {});
    assert!(format!("{:#}", bad.unwrap_err()).contains("top_p"));
}

#[test]
fn samples_of_one_prompt_share_its_prefill_and_match_separate_runs() {
    let m = model("tiny-qwen2");
    let sampling = SamplingConfig { temperature: 1.0, seed: 11, max_new_tokens: 9, ..SamplingConfig::default() };
    let prompt: Vec<u32> = (0..13).map(|j| (j * 5 + 1) % 96).collect();
    let group = || -> Vec<GenRequest> { (0..4u32).map(|i| GenRequest { id: i, prompt: prompt.clone(), sampling: sampling.clone() }).collect() };
    let opts = EngineOptions { max_batch: 4, block_size: 4, stop_ids: vec![] };
    let together = generate(&Cpu, &m, group(), &opts, None, |_, _| {}).unwrap();
    for r in group() {
        let id = r.id as usize;
        let alone = generate(&Cpu, &m, vec![r], &opts, None, |_, _| {}).unwrap();
        assert_eq!(alone[0].completion_ids, together[id].completion_ids, "sample {id}");
    }
    let distinct: std::collections::BTreeSet<_> = together.iter().map(|c| c.completion_ids.clone()).collect();
    assert!(distinct.len() > 1, "different streams should draw different samples");
}

/// A multi-turn episode on the engine: turn 2 continues the cached sequence with new tokens on
/// top of turn 1's output and samples exactly what one long prompt of the same tokens gives,
/// while another sequence keeps decoding in the same batches.
#[test]
fn a_continued_sequence_matches_one_long_prompt() {
    use atomrl::rollout::Engine;
    let m = model("tiny-qwen2");
    let opts = EngineOptions { max_batch: 4, block_size: 4, ..EngineOptions::default() };
    let mut engine = Engine::new(&Cpu, &m, opts.clone(), 256).unwrap();
    let first = vec![5u32, 17, 42, 8];
    let observation = vec![61u32, 3, 29];
    engine.submit(GenRequest { id: 7, prompt: first.clone(), sampling: greedy(6) }).unwrap();
    engine.submit(GenRequest { id: 9, prompt: vec![11, 12], sampling: greedy(20) }).unwrap();
    let err = engine.submit(GenRequest { id: 7, prompt: vec![1], sampling: greedy(1) }).unwrap_err();
    assert!(err.to_string().contains("already has a turn in progress"), "{err}");
    let (mut t1, mut t2) = (None, None);
    while !engine.is_idle() {
        for c in engine.step(None, &mut |_, _| {}).unwrap() {
            if c.id != 7 {
                continue;
            }
            if t1.is_none() {
                t1 = Some(c);
                engine.submit(GenRequest { id: 7, prompt: observation.clone(), sampling: greedy(5) }).unwrap();
            } else {
                t2 = Some(c);
            }
        }
    }
    let (t1, t2) = (t1.unwrap(), t2.unwrap());
    assert_eq!(engine.len(7), first.len() + t1.completion_ids.len() + observation.len() + t2.completion_ids.len());
    let long: Vec<u32> = first.iter().chain(&t1.completion_ids).chain(&observation).copied().collect();
    let want = generate(&Cpu, &m, vec![GenRequest { id: 0, prompt: long, sampling: greedy(5) }], &opts, None, |_, _| {}).unwrap();
    assert_eq!(t2.completion_ids, want[0].completion_ids);
    for (a, b) in t2.completion_logprobs.iter().zip(&want[0].completion_logprobs) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(t2.prompt_ids, observation);
}
