//! Generation on the GPU with the fixture models: the paged-cache decode against recomputation on
//! the same backend, greedy tokens against the CPU's where the choice is clear, and continuous
//! batching end to end; and SmolLM2-135M-Instruct's greedy answer to the France prompt, the
//! CPU's (when `scripts/fetch-smollm2.sh` has converted it). Skips (and says why) without a GPU
//! or without kernels in this build.

mod gpu_support;

use std::path::PathBuf;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::Backend;
use atomrl::model::{KvCache, Model};
use atomrl::rollout::{generate, EngineOptions, FinishReason, GenRequest, SamplingConfig};
use atomrl::tokenizer::Tokenizer;

/// |a - b| <= ATOL + RTOL |b| for logits of a bf16 model against the same model (bf16 roundings in
/// a different order: the cache path and the packed path).
const ATOL: f32 = 1.0 / 16.0;
const RTOL: f32 = 0.08;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn last_logits<B: Backend>(be: &B, m: &Model<B>, ids: &[u32]) -> Vec<f32> {
    let fwd = m.forward_train(be, ids, &[0, ids.len() as u32], false).unwrap();
    let t = m.logits(be, &fwd.x_final, &[ids.len() - 1]).unwrap();
    be.to_f32(&t).unwrap()
}

#[test]
fn cached_decode_matches_recomputation_on_the_gpu() {
    let g = gpu_or_skip!();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        let m = Model::load(g, &dir(name)).unwrap();
        let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 90).collect();
        let mut cache = KvCache::new(g, &m.config, 64, 4).unwrap();
        let mut got = g.to_f32(&m.forward_cached(g, &mut cache, &[(0, &ids[..5])], false).unwrap()).unwrap();
        for n in 5..=ids.len() {
            let want = last_logits(g, &m, &ids[..n]);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= ATOL + RTOL * b.abs(), "{name}: length {n}, logit {i}: cached {a}, recomputed {b}");
            }
            if n < ids.len() {
                got = g.to_f32(&m.forward_cached(g, &mut cache, &[(0, &ids[n..n + 1])], false).unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn greedy_tokens_match_the_cpu_while_the_choice_is_clear() {
    let g = gpu_or_skip!();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        let cpu_model = Model::load(&Cpu, &dir(name)).unwrap();
        let gpu_model = Model::load(g, &dir(name)).unwrap();
        let prompt = vec![5u32, 17, 42, 8];
        let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: 12, ..SamplingConfig::default() };
        let req = || vec![GenRequest { id: 0, prompt: prompt.clone(), sampling: sampling.clone() }];
        let cpu = generate(&Cpu, &cpu_model, req(), &EngineOptions::default(), None, |_, _| {}).unwrap();
        let gpu = generate(g, &gpu_model, req(), &EngineOptions::default(), None, |_, _| {}).unwrap();
        // Compare until the CPU's best and second-best logits come within bf16 noise of each other.
        let mut seq = prompt.clone();
        for (i, (&c, &d)) in cpu[0].completion_ids.iter().zip(&gpu[0].completion_ids).enumerate() {
            let mut l = last_logits(&Cpu, &cpu_model, &seq);
            l.sort_by(|a, b| b.total_cmp(a));
            if l[0] - l[1] < 2.0 * ATOL {
                break;
            }
            assert_eq!(d, c, "{name}: token {i}: gpu {d}, cpu {c}");
            seq.push(c);
        }
    }
}

#[test]
fn continuous_batching_runs_on_the_gpu() {
    let g = gpu_or_skip!();
    let m = Model::load(g, &dir("tiny-llama")).unwrap();
    let vocab = m.config.vocab_size as u32;
    let sampling = SamplingConfig { temperature: 0.9, top_p: 0.95, top_k: 40, seed: 7, max_new_tokens: 12, ..SamplingConfig::default() };
    let reqs: Vec<GenRequest> = (0..7u32).map(|i| GenRequest { id: i, prompt: (0..(3 + i * 2)).map(|j| (j * 11 + i) % 96).collect(), sampling: sampling.clone() }).collect();
    let opts = EngineOptions { max_batch: 3, block_size: 4, stop_ids: vec![] };
    let out = generate(g, &m, reqs, &opts, None, |_, _| {}).unwrap();
    assert_eq!(out.len(), 7);
    for c in &out {
        assert_eq!(c.completion_ids.len(), 12, "request {}", c.id);
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(c.completion_ids.iter().all(|&t| t < vocab));
        assert!(c.completion_logprobs.iter().all(|&lp| lp.is_finite() && lp <= 1e-6));
    }
}

#[test]
fn smollm2_answers_the_france_prompt_as_on_the_cpu() {
    let g = gpu_or_skip!();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if !dir.join("model.safetensors").exists() {
        eprintln!("skipped: {} not found (run scripts/fetch-smollm2.sh)", dir.display());
        return;
    }
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompt = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n").unwrap();
    let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: 32, ..SamplingConfig::default() };
    let opts = EngineOptions { stop_ids: tok.stop_ids.clone(), ..EngineOptions::default() };
    let model = Model::load(g, &dir).unwrap();
    let out = generate(g, &model, vec![GenRequest { id: 0, prompt, sampling }], &opts, Some(&tok), |_, _| {}).unwrap();
    // tests/smollm2.rs checks that the CPU gives this text, as transformers does
    assert_eq!(tok.decode(&out[0].completion_ids).unwrap(), "The capital of France is Paris.<|im_end|>");
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
}
