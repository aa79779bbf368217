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

mod common;

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

/// Flops of one training step: 6 per parameter per token for the matrix products (forward 2,
/// backward 4; the tied head counted once), plus causal attention's products (4 in the forward,
/// 8 in the backward, per query-key pair and head dimension, half under the mask).
fn step_flops(cfg: &ModelConfig, n_seqs: usize, len: usize) -> f64 {
    let tokens = (n_seqs * len) as f64;
    let params = cfg.num_params() as f64;
    let attn = 12.0 * (len * len) as f64 / 2.0 * cfg.head_dim as f64 * cfg.num_heads as f64 * cfg.num_layers as f64 * n_seqs as f64;
    6.0 * params * tokens + attn
}

/// Seconds of each part of one step.
struct Timing {
    gen: f64,
    fwd: f64,
    loss: f64,
    bwd: f64,
    adamw: f64,
}

impl Timing {
    fn train(&self) -> f64 {
        self.fwd + self.loss + self.bwd + self.adamw
    }
}

/// The model, its optimizer and the batch layout: `n_seqs` sequences of `len` tokens, a prompt
/// of `prompt` tokens each and the loss on the rest.
struct Run<'a> {
    g: &'a CudaBackend,
    cfg: ModelConfig,
    model: Model<CudaBackend>,
    opt: AdamWState<CudaBackend>,
    grads: atomrl::model::Weights<atomrl::backend::cuda::CudaTensor>,
    prompts: Vec<Vec<u32>>,
    cu: Vec<u32>,
    mask: Vec<f32>,
    n_seqs: usize,
    len: usize,
    prompt: usize,
}

impl<'a> Run<'a> {
    fn new(g: &'a CudaBackend, cfg: ModelConfig, n_seqs: usize, len: usize, prompt: usize) -> anyhow::Result<Self> {
        let host = common::random_weights(&cfg)?;
        let model = Model::from_host(g, cfg.clone(), &host)?;
        let opt = AdamWState::new(g, &model.weights, Some(&host))?;
        let grads = model.zero_grads(g)?;
        let prompts = (0..n_seqs).map(|s| (0..prompt).map(|i| ((s * 7919 + i * 104729) % cfg.vocab_size) as u32).collect()).collect();
        let cu = (0..=n_seqs).map(|s| (s * len) as u32).collect();
        let mask = (0..n_seqs * len).map(|r| if r % len >= prompt && r % len < len - 1 { 1.0 } else { 0.0 }).collect();
        Ok(Run { g, cfg, model, opt, grads, prompts, cu, mask, n_seqs, len, prompt })
    }

    /// The rollout: every prompt continued to `len` tokens (random weights never stop early).
    fn rollout(&self, seed: u64) -> anyhow::Result<Vec<u32>> {
        let sampling = SamplingConfig { temperature: 1.0, max_new_tokens: self.len - self.prompt, seed, ..SamplingConfig::default() };
        let reqs = self.prompts.iter().enumerate().map(|(i, p)| GenRequest { id: i as u32, prompt: p.clone(), sampling: sampling.clone() }).collect();
        let out = generate(self.g, &self.model, reqs, &EngineOptions { max_batch: self.n_seqs, ..EngineOptions::default() }, None, |_, _| {})?;
        let tokens: Vec<u32> = out.iter().flat_map(|c| self.prompts[c.id as usize].iter().chain(&c.completion_ids).copied()).collect();
        anyhow::ensure!(tokens.len() == self.n_seqs * self.len, "the rollout gave {} tokens, expected {}", tokens.len(), self.n_seqs * self.len);
        Ok(tokens)
    }

    /// Rollout, then the training step on it, each part timed to its last kernel.
    fn step(&mut self, step: u64, recompute: &Recompute) -> anyhow::Result<Timing> {
        let (g, n) = (self.g, self.n_seqs * self.len);
        let t0 = Instant::now();
        let tokens = self.rollout(step)?;
        g.synchronize()?;
        let t1 = Instant::now();
        let totals = LossTotals::of([(&self.mask[..], &self.cu[..])]);
        let rows = PolicyRows {
            targets: next_tokens(&tokens, &self.cu),
            weights: loss_weights(&self.mask, &self.cu, LossAgg::TokenMean, &totals, None),
            advantages: (0..n).map(|r| if (r / self.len) % 2 == 0 { 1.0 } else { -1.0 }).collect(),
            old_logp: None,
            ref_logp: None,
            rollout_logp: None,
        };
        let fwd = self.model.forward_packed(g, self.model.pack(g, &tokens, &self.cu)?, Some(recompute))?;
        g.synchronize()?;
        let t2 = Instant::now();
        for gr in self.grads.visit_mut() {
            g.fill(gr, 0.0)?;
        }
        let mut dh = g.zeros(n * self.cfg.hidden_size)?;
        let obj = ObjectiveConfig { clip_high: 0.28, kl_coef: 0.0, ..ObjectiveConfig::default() };
        let grads = Some(LossGrads { d_hidden: &mut dh, d_head: self.grads.head_mut() });
        policy_loss(g, &fwd.hidden, self.model.weights.head(), self.cfg.hidden_size, self.cfg.vocab_size, &rows, &obj, grads)?;
        g.synchronize()?;
        let t3 = Instant::now();
        self.model.backward(g, &fwd, &dh, &mut self.grads)?;
        drop(fwd);
        g.synchronize()?;
        let t4 = Instant::now();
        self.opt.step(g, &AdamWConfig::default(), &param_infos(&self.cfg), &mut self.model.weights, &self.grads, 1e-6)?;
        g.synchronize()?;
        let t5 = Instant::now();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok(Timing { gen: secs(t0, t1), fwd: secs(t1, t2), loss: secs(t2, t3), bwd: secs(t3, t4), adamw: secs(t4, t5) })
    }
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
    let flops = step_flops(&cfg, n_seqs, len);
    let peak = common::gpu_peaks(g.device_name()).0;
    let shape = if smoke { "toy shape" } else { "qwen2.5-0.5b shape" };
    let config = format!("{shape}, {n_seqs}x{len} tokens, recompute {recompute:?}");
    println!("{} ({} params): {config}", g.device_name(), cfg.num_params());
    let mut run = Run::new(&g, cfg, n_seqs, len, prompt)?;
    println!("{:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}", "step", "gen s", "fwd s", "loss s", "bwd s", "adamw s", "step s", "tok/s", "MFU");
    let tokens = (n_seqs * len) as f64;
    let mut kept = Vec::new();
    for step in 1..=steps {
        let t = run.step(step as u64, &recompute)?;
        let train = t.train();
        println!(
            "{step:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>5.1}%",
            t.gen, t.fwd, t.loss, t.bwd, t.adamw, train, tokens / train, 100.0 * flops / train / 1e12 / peak
        );
        if step > 1 || steps == 1 {
            kept.push(t);
        }
    }
    if smoke {
        println!("smoke: train step and rollout ran");
        return Ok(());
    }
    let train = kept.iter().map(Timing::train).sum::<f64>() / kept.len() as f64;
    let gen = kept.iter().map(|t| t.gen).sum::<f64>() / kept.len() as f64;
    let report = |what: &str, secs: f64, mfu: bool| {
        let m = if mfu { format!("{:.0}%", 100.0 * flops / secs / 1e12 / peak) } else { "-".into() };
        println!("RESULT|train_step|{what}|atomrl|{:.1}|tok/s|{:.0}|{m}", secs * 1e3, tokens / secs);
    };
    report(&format!("{config}, generation excluded"), train, true);
    report(&format!("{config}, generation included"), train + gen, false);
    println!("pool: {:.1} GiB held", g.pool_bytes() as f64 / (1u64 << 30) as f64);
    Ok(())
}
