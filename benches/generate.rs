//! Generation throughput on SmolLM2-135M-Instruct (converted by `scripts/fetch-smollm2.sh`):
//! prompt 64 tokens, 128 new tokens, greedy, at batch 1 and batch 8, on the CPU backend.
//! Run: `cargo bench --bench generate`.

use std::path::PathBuf;
use std::time::Instant;

use atomrl::backend::cpu::Cpu;
use atomrl::model::Model;
use atomrl::rollout::{generate, EngineOptions, GenRequest, SamplingConfig};

fn main() {
    atomrl::backend::cpu::join_thread_pool(); // as the binary does
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if !dir.join("model.safetensors").exists() {
        println!("skipped: {} not found (run scripts/fetch-smollm2.sh)", dir.display());
        return;
    }
    let model = Model::load(&Cpu, &dir).expect("loading SmolLM2");
    let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: 128, ..SamplingConfig::default() };
    let threads = rayon::current_num_threads();
    println!("SmolLM2-135M, CPU backend (f32), {threads} threads, prompt 64, 128 new tokens, greedy");
    println!("{:>6} {:>10} {:>12}", "batch", "seconds", "tokens/s");
    for batch in [1usize, 8] {
        let reqs = || -> Vec<GenRequest> {
            (0..batch as u32)
                .map(|i| GenRequest { id: i, prompt: (0..64).map(|j| 100 + (j * 31 + i * 7) % 40000).collect(), sampling: sampling.clone() })
                .collect()
        };
        // Never stop early: no stop tokens, so every sequence makes all 128 tokens.
        let opts = EngineOptions { max_batch: batch, ..EngineOptions::default() };
        generate(&Cpu, &model, reqs(), &opts, None, |_, _| {}).unwrap(); // warm-up
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let out = generate(&Cpu, &model, reqs(), &opts, None, |_, _| {}).unwrap();
            assert!(out.iter().all(|c| c.completion_ids.len() == 128));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{batch:>6} {best:>10.2} {:>12.1}", (batch * 128) as f64 / best);
    }
}
