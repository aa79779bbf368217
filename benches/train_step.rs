//! One training step (forward, GRPO loss, backward, AdamW) of a SmolLM2-135M-shaped model with
//! random weights on 4 × 256 tokens, on the CPU backend; prints a table of where the time goes.
//!
//! `cargo bench --bench train_step` (env `ATOMRL_BENCH_STEPS`, default 3; `ATOMRL_BENCH_RECOMPUTE=1`
//! recomputes every layer's activations in the backward pass; `ATOMRL_BENCH_ALL_ROWS=1` puts
//! every token in the loss; `ATOMRL_BENCH_CHUNK` sets the loss chunk in rows).

mod common;

use std::time::Instant;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{AdamW, Backend, LossGrads};
use atomrl::model::{Model, ModelConfig, Recompute};
use atomrl::rl::objective::{next_tokens, policy_loss, LossAgg, LossTotals, ObjectiveConfig, PolicyRows, loss_weights};

const CONFIG: &str = r#"{
  "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
  "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
  "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192,
  "tie_word_embeddings": true
}"#;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`; under a loaded
/// machine, CPU time over the thread count bounds what the step would take alone.
/// Also returns the minor page faults so far (fresh memory touched for the first time).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat.rsplit(')').next().unwrap_or("").split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    ((get(11) + get(12)) / 100.0, get(7))
}

fn main() -> anyhow::Result<()> {
    atomrl::backend::cpu::join_thread_pool(); // as the binary does
    let steps: usize = std::env::var("ATOMRL_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let recompute = if std::env::var("ATOMRL_BENCH_RECOMPUTE").is_ok_and(|v| v == "1") { Recompute::Always } else { Recompute::Never };
    let be = Cpu;
    let cfg = ModelConfig::from_json(CONFIG)?;
    let host = common::random_weights(&cfg)?;
    let mut model = Model::from_host(&be, cfg.clone(), &host)?;
    drop(host);
    // By default the loss covers the completion (the last 192 of 256 tokens), as in RL; with
    // ATOMRL_BENCH_ALL_ROWS=1 every next-token row, as a language-model step computes it.
    let all_rows = std::env::var("ATOMRL_BENCH_ALL_ROWS").is_ok_and(|v| v == "1");
    let (n_seqs, len, prompt) = (4usize, 256usize, if all_rows { 0 } else { 64usize });
    let tokens: Vec<u32> = (0..n_seqs * len).map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32).collect();
    let cu: Vec<u32> = (0..=n_seqs).map(|s| (s * len) as u32).collect();
    let mask: Vec<f32> = (0..n_seqs * len).map(|r| if r % len >= prompt && r % len < len - 1 { 1.0 } else { 0.0 }).collect();
    let totals = LossTotals::of([(&mask[..], &cu[..])]);
    let chunk_rows = std::env::var("ATOMRL_BENCH_CHUNK").ok().and_then(|s| s.parse().ok());
    let obj = ObjectiveConfig { clip_high: 0.28, kl_coef: 0.0, chunk_rows, ..ObjectiveConfig::default() };
    let rows = PolicyRows {
        targets: next_tokens(&tokens, &cu),
        weights: loss_weights(&mask, &cu, LossAgg::TokenMean, &totals, None),
        advantages: (0..n_seqs * len).map(|r| if (r / len) % 2 == 0 { 1.0 } else { -1.0 }).collect(),
        old_logp: Some(vec![-10.8; n_seqs * len]),
        ref_logp: None,
        rollout_logp: None,
    };
    let mut m = model.zero_grads(&be)?;
    let mut v = model.zero_grads(&be)?;
    println!(
        "atomrl train step, SmolLM2-135M shape ({} params), {n_seqs} x {len} tokens, loss on {} rows, {} rayon threads, recompute {recompute:?}",
        cfg.num_params(),
        totals.tokens,
        rayon::current_num_threads()
    );
    println!("{:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}", "step", "fwd s", "loss s", "bwd s", "adamw s", "total s", "cpu s", "faults", "tok/s");
    let mut grads = model.zero_grads(&be)?;
    let mut totals_s = Vec::new();
    for step in 1..=steps {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let batch = model.pack(&be, &tokens, &cu)?;
        let fwd = model.forward_packed(&be, batch, Some(&recompute))?;
        let t1 = Instant::now();
        for g in grads.visit_mut() {
            be.fill(g, 0.0)?;
        }
        let mut dh = be.zeros(tokens.len() * cfg.hidden_size)?;
        let (_, stats) = policy_loss(&be, &fwd.hidden, model.weights.head(), cfg.hidden_size, cfg.vocab_size, &rows, &obj, Some(LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() }))?;
        let t2 = Instant::now();
        model.backward(&be, &fwd, &dh, &mut grads)?;
        drop(fwd);
        let t3 = Instant::now();
        let hp = AdamW { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: step as u64, grad_scale: 1.0 };
        for ((p, g), (m, v)) in model.weights.visit_mut().into_iter().zip(grads.visit()).zip(m.visit_mut().into_iter().zip(v.visit_mut())) {
            be.adamw(p, g, m, v, hp)?;
        }
        let t4 = Instant::now();
        let total = (t4 - t0).as_secs_f64();
        let (c1, f1) = cpu_seconds();
        println!(
            "{step:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.2} {:>9.0} {:>10.0}   (loss {:.4})",
            (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64(), (t4 - t3).as_secs_f64(), total, c1 - c0.0, f1 - c0.1, tokens.len() as f64 / total, stats.metrics().loss
        );
        if step > 1 || steps == 1 {
            totals_s.push(total);
        }
    }
    let mean = totals_s.iter().sum::<f64>() / totals_s.len() as f64;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").split_whitespace().nth(1).unwrap_or("?").to_string();
    println!("mean step (excluding the first): {mean:.3} s, peak resident memory {} MB  (PyTorch transformers f32 eager on a comparable 2-core machine: ~7.2 s)", peak.parse::<f64>().map(|k| format!("{:.0}", k / 1024.0)).unwrap_or(peak));
    Ok(())
}
