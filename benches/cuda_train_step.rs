//! The whole RL step on the GPU, on a Qwen2.5-0.5B-shaped model with random weights: the
//! training step alone (pack, forward, GRPO objective, backward, AdamW with f32 masters), and
//! with the rollout that feeds it (generation of the completions first). Prints tokens/s, the
//! model FLOP utilisation against the GPU's bf16 peak, and `RESULT` lines for
//! `benches/gpu_suite.sh` (peer: `benches/peers/train_step_torch.py`). Without a GPU it says why
//! and exits 0; `ATOMRL_BENCH_SMOKE=1` runs a toy shape once (the test command does, on the CPU
//! emulator).
//!
//! `cargo bench --bench cuda_train_step` (env `ATOMRL_BENCH_STEPS`, default 3;
//! `ATOMRL_BENCH_RECOMPUTE=1` recomputes every layer's activations in the backward pass).

use std::time::Instant;

use atomrl::backend::cuda::{cuda_available, CudaBackend};
use atomrl::backend::{Backend, LossGrads};
use atomrl::model::{param_infos, Model, ModelConfig, Recompute};
use atomrl::rl::objective::{loss_weights, next_tokens, policy_loss, LossAgg, LossTotals, ObjectiveConfig, PolicyRows};
use atomrl::rl::optimizer::{AdamWConfig, AdamWState};
use atomrl::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};

const QWEN25_05B: &str = r#"{
  "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
  "tie_word_embeddings": true
}"#;

const TOY: &str = r#"{
  "model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 512,
  "tie_word_embeddings": true
}"#;

/// Dense bf16 tensor-core TFLOP/s of the GPUs we expect, by name (as benches/cuda_kernels.rs).
fn peak_tflops(name: &str) -> f64 {
    let n = name.to_ascii_uppercase();
    if n.contains("H100") && n.contains("PCIE") {
        756.0
    } else if n.contains("H100") || n.contains("H200") {
        989.0
    } else if n.contains("A100") {
        312.0
    } else {
        f64::NAN
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Flops of one training step: 6 per parameter per token for the matrix products (forward 2,
/// backward 4; the tied head counted once), plus causal attention's products (4 in the forward,
/// 8 in the backward, per query-key pair and head dimension, half under the mask).
fn step_flops(cfg: &ModelConfig, n_seqs: usize, len: usize) -> f64 {
    let tokens = (n_seqs * len) as f64;
    let params = cfg.num_params() as f64;
    let attn = 12.0 * (len * len) as f64 / 2.0 * cfg.head_dim as f64 * cfg.num_heads as f64 * cfg.num_layers as f64 * n_seqs as f64;
    6.0 * params * tokens + attn
}

fn main() -> anyhow::Result<()> {
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        if std::env::var_os("ATOMRL_REQUIRE_GPU").is_some() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let smoke = std::env::var_os("ATOMRL_BENCH_SMOKE").is_some();
    let steps: usize = if smoke { 1 } else { std::env::var("ATOMRL_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3) };
    let recompute = if std::env::var("ATOMRL_BENCH_RECOMPUTE").is_ok_and(|v| v == "1") { Recompute::Always } else { Recompute::Never };
    let g = CudaBackend::new(0)?;
    let cfg = ModelConfig::from_json(if smoke { TOY } else { QWEN25_05B })?;
    // 16 sequences of 1024 tokens: a 256-token prompt and 768 generated, the loss on the latter.
    let (n_seqs, len, prompt) = if smoke { (2usize, 40usize, 8usize) } else { (16, 1024, 256) };
    let mut rng = Lcg(7);
    let host = param_infos(&cfg).try_map(|p| {
        let scale = if p.shape.len() == 1 { 0.0 } else { 0.02 };
        Ok((0..p.numel()).map(|_| if scale == 0.0 { 1.0 } else { scale * rng.next() }).collect::<Vec<f32>>())
    })?;
    let mut model = Model::from_host(&g, cfg.clone(), &host)?;
    let mut opt = AdamWState::new(&g, &model.weights, Some(&host))?;
    drop(host);
    let infos = param_infos(&cfg);
    let peak = peak_tflops(g.device_name());
    let shape = if smoke { "toy shape" } else { "qwen2.5-0.5b shape" };
    let config = format!("{shape}, {n_seqs}x{len} tokens, recompute {recompute:?}");
    println!("{} ({} params): {config}", g.device_name(), cfg.num_params());

    let prompts: Vec<Vec<u32>> = (0..n_seqs).map(|s| (0..prompt).map(|i| ((s * 7919 + i * 104729) % cfg.vocab_size) as u32).collect()).collect();
    let cu: Vec<u32> = (0..=n_seqs).map(|s| (s * len) as u32).collect();
    let mask: Vec<f32> = (0..n_seqs * len).map(|r| if r % len >= prompt && r % len < len - 1 { 1.0 } else { 0.0 }).collect();
    let totals = LossTotals::of([(&mask[..], &cu[..])]);
    let obj = ObjectiveConfig { clip_high: 0.28, kl_coef: 0.0, ..ObjectiveConfig::default() };
    let adamw = AdamWConfig::default();
    let flops = step_flops(&cfg, n_seqs, len);
    let mut grads = model.zero_grads(&g)?;
    println!("{:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}", "step", "gen s", "fwd s", "loss s", "bwd s", "adamw s", "step s", "tok/s", "MFU");
    let (mut step_s, mut gen_s) = (Vec::new(), Vec::new());
    for step in 1..=steps {
        // The rollout: every prompt continued to `len` tokens (random weights never stop early).
        let t0 = Instant::now();
        let sampling = SamplingConfig { temperature: 1.0, max_new_tokens: len - prompt, seed: step as u64, ..SamplingConfig::default() };
        let reqs = prompts.iter().enumerate().map(|(i, p)| GenRequest { id: i as u32, prompt: p.clone(), sampling: sampling.clone() }).collect();
        let out = generate(&g, &model, reqs, &EngineOptions { max_batch: n_seqs, ..EngineOptions::default() }, None, |_, _| {})?;
        let tokens: Vec<u32> = out.iter().flat_map(|c| prompts[c.id as usize].iter().chain(&c.completion_ids).copied()).collect();
        anyhow::ensure!(tokens.len() == n_seqs * len, "the rollout gave {} tokens, expected {}", tokens.len(), n_seqs * len);
        g.synchronize()?;
        let t1 = Instant::now();

        let rows = PolicyRows {
            targets: next_tokens(&tokens, &cu),
            weights: loss_weights(&mask, &cu, LossAgg::TokenMean, &totals, None),
            advantages: (0..n_seqs * len).map(|r| if (r / len) % 2 == 0 { 1.0 } else { -1.0 }).collect(),
            old_logp: None,
            ref_logp: None,
            rollout_logp: None,
        };
        let fwd = model.forward_packed(&g, model.pack(&g, &tokens, &cu)?, Some(&recompute))?;
        g.synchronize()?;
        let t2 = Instant::now();
        for gr in grads.visit_mut() {
            g.fill(gr, 0.0)?;
        }
        let mut dh = g.zeros(tokens.len() * cfg.hidden_size)?;
        policy_loss(&g, &fwd.hidden, model.weights.head(), cfg.hidden_size, cfg.vocab_size, &rows, &obj, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() }))?;
        g.synchronize()?;
        let t3 = Instant::now();
        model.backward(&g, &fwd, &dh, &mut grads)?;
        drop(fwd);
        g.synchronize()?;
        let t4 = Instant::now();
        opt.step(&g, &adamw, &infos, &mut model.weights, &grads, 1e-6)?;
        g.synchronize()?;
        let t5 = Instant::now();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        let train = secs(t1, t5);
        println!(
            "{step:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>5.1}%",
            secs(t0, t1), secs(t1, t2), secs(t2, t3), secs(t3, t4), secs(t4, t5), train, tokens.len() as f64 / train, 100.0 * flops / train / 1e12 / peak
        );
        if step > 1 || steps == 1 {
            step_s.push(train);
            gen_s.push(secs(t0, t1));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (train, gen) = (mean(&step_s), mean(&gen_s));
    let tokens = (n_seqs * len) as f64;
    if smoke {
        println!("smoke: train step and rollout ran");
        return Ok(());
    }
    let report = |what: &str, secs: f64, mfu: bool| {
        let m = if mfu { format!("{:.0}%", 100.0 * flops / secs / 1e12 / peak) } else { "-".into() };
        println!("RESULT|train_step|{what}|atomrl|{:.1}|tok/s|{:.0}|{m}", secs * 1e3, tokens / secs);
    };
    report(&format!("{config}, generation excluded"), train, true);
    report(&format!("{config}, generation included"), train + gen, false);
    println!("pool: {:.1} GiB held", g.pool_bytes() as f64 / (1u64 << 30) as f64);
    Ok(())
}
