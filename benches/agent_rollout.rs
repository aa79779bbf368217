//! Agent rollouts on the CPU with SmolLM2-135M-Instruct: wall time, episodes/s and decoded
//! tokens/s with tools on worker threads while the engine decodes the other episodes (overlap)
//! against tools run on the decoding thread (no overlap), same episodes, same run.
//!
//! Every turn decodes `turn_tokens` real tokens with the model; what the turn *says* is then
//! replaced by a fixed script of tool calls (list, view, search, run the task's failing tests,
//! submit), so that every episode spends real sandbox time: a 135M model seldom writes a valid
//! call by itself. Run: `cargo bench --bench agent_rollout` (needs the model, the corpus
//! sources and a working sandbox; says what is missing otherwise).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use atomrl::agent::{agent_messages, run_episodes_with, AgentConfig, AgentRequest, ToolConfig, TurnSource};
use atomrl::backend::cpu::Cpu;
use atomrl::model::Model;
use atomrl::rl::tasks::messages_ids;
use atomrl::rollout::{Completion, Engine, EngineOptions, GenRequest, SamplingConfig};
use atomrl::skills::{load_tasks, BadLine, Grader, GraderConfig, Skill, Task};
use atomrl::tokenizer::Tokenizer;

/// The engine decodes; the script speaks.
struct Forced<'a> {
    engine: Engine<'a, Cpu>,
    script: HashMap<u32, VecDeque<String>>,
    decoded: usize,
}

impl TurnSource for Forced<'_> {
    fn submit(&mut self, req: GenRequest) -> Result<()> {
        self.engine.submit(req)
    }
    fn step(&mut self, tokenizer: &Tokenizer) -> Result<Vec<Completion>> {
        let mut done = self.engine.step(Some(tokenizer), &mut |_, _| {})?;
        for c in &mut done {
            self.decoded += c.completion_ids.len();
            let text = self.script.get_mut(&c.id).and_then(|s| s.pop_front()).unwrap_or_default();
            c.completion_ids = tokenizer.encode(&text)?;
            c.completion_logprobs = vec![0.0; c.completion_ids.len()];
        }
        Ok(done)
    }
    fn is_idle(&self) -> bool {
        self.engine.is_idle()
    }
    fn release(&mut self, id: u32) {
        self.engine.release(id)
    }
}

fn call(name: &str, arguments: serde_json::Value) -> String {
    format!("<tool_call>{}</tool_call>", serde_json::json!({"name": name, "arguments": arguments}))
}

fn script(task: &Task) -> VecDeque<String> {
    let file = task.gold_files().first().cloned().unwrap_or_default();
    let test = task.FAIL_TO_PASS.first().cloned().unwrap_or_default();
    VecDeque::from(vec![
        call("list", serde_json::json!({})),
        call("view", serde_json::json!({"path": file, "start": 1, "end": 30})),
        call("run", serde_json::json!({"command": format!("python -m pytest -q -p no:cacheprovider {test}")})),
        call("search", serde_json::json!({"pattern": "^def "})),
        call("run", serde_json::json!({"command": format!("python -m pytest -q -p no:cacheprovider {test}")})),
        call("submit", serde_json::json!({})),
    ])
}

fn main() -> Result<()> {
    atomrl::backend::cpu::join_thread_pool(); // as the binary does
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(".cache/smollm2/hf");
    if !dir.join("model.safetensors").exists() {
        println!("skipped: {} not found (run scripts/fetch-smollm2.sh)", dir.display());
        return Ok(());
    }
    let (all, _) = load_tasks(&root.join("data/corpus/train.jsonl"), BadLine::Skip)?;
    let tasks: Vec<Task> = all.into_iter().filter(|t| t.skill == Skill::Edit && t.env.is_some()).take(8).collect();
    let grader = match Grader::new(GraderConfig::default()).and_then(|g| g.prepare(&tasks).map(|_| g)) {
        Ok(g) => g,
        Err(e) => {
            println!("skipped: the grader cannot run here: {e:#}");
            return Ok(());
        }
    };
    let model = Model::load(&Cpu, &dir)?;
    let tok = Tokenizer::from_dir(&dir)?;
    let requests: Vec<AgentRequest> = tasks
        .iter()
        .map(|t| {
            let messages = agent_messages(t);
            Ok(AgentRequest { task: t, prompt_ids: messages_ids(&tok, &messages)?, messages })
        })
        .collect::<Result<_>>()?;
    let turn_tokens = 32;
    let sampling = SamplingConfig { temperature: 1.0, seed: 3, ..SamplingConfig::default() };
    println!("SmolLM2-135M, CPU, {} episodes of 6 turns ({turn_tokens} decoded tokens each; tools: list, view, pytest, search, pytest, submit)", requests.len());
    println!("{:>12} {:>9} {:>11} {:>13} {:>11} {:>10}", "tool threads", "seconds", "episodes/s", "decoded tok/s", "tool calls", "tool secs");
    for workers in [2usize, 0] {
        let tools = ToolConfig { observation_chars: 1000, ..ToolConfig::default() };
        let cfg = AgentConfig { max_turns: 8, turn_tokens, max_trajectory_tokens: 8192, max_episodes: 8, tool_workers: workers, tools, ..AgentConfig::default() };
        let opts = EngineOptions { max_batch: 8, stop_ids: Vec::new(), ..EngineOptions::default() };
        let capacity = cfg.max_episodes * (cfg.max_trajectory_tokens + 2 * opts.block_size);
        let engine = Engine::new(&Cpu, &model, opts, capacity)?;
        let mut source = Forced { engine, script: tasks.iter().enumerate().map(|(i, t)| (i as u32, script(t))).collect(), decoded: 0 };
        let t = Instant::now();
        let out = run_episodes_with(&mut source, &tok, &grader, &requests, &cfg, &sampling)?;
        let secs = t.elapsed().as_secs_f64();
        let calls: u32 = out.iter().flat_map(|t| t.tool_calls.values()).sum();
        let tool_secs: f64 = out.iter().map(|t| t.tool_seconds).sum();
        println!("{workers:>12} {secs:>9.2} {:>11.3} {:>13.1} {calls:>11} {tool_secs:>10.1}", out.len() as f64 / secs, source.decoded as f64 / secs);
    }
    Ok(())
}
