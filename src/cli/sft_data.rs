//! `atomrl sft-data --tasks FILE --out FILE [--verify]`: the skill corpus's gold answers as chat
//! transcripts (`{"messages": [...]}` per line) for `atomrl sft`; with `--agent`, gold agent
//! episodes (tool calls with observations from real workspaces, then `submit`) for the warm start
//! of agent mode. Tasks of the test split are refused.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::agent::{gold_transcript, ToolConfig};
use crate::sft::{from_task, write_examples, Example};
use crate::skills::{load_tasks, BadLine, Grader, GraderConfig, Tier};

#[derive(Args, Debug)]
pub struct SftDataArgs {
    /// Task instances (JSONL), train split only.
    #[arg(long, required = true)]
    pub tasks: Vec<PathBuf>,
    /// Where to write the examples (JSONL).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep only tasks of this tier (`easy`, `normal`); repeatable.
    #[arg(long, value_parser = parse_tier)]
    pub tier: Vec<Tier>,
    /// Keep only tasks whose gold answer the grader scores 1 (runs every gold answer in the sandbox).
    #[arg(long)]
    pub verify: bool,
    /// Concurrent gradings for `--verify` (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Gold agent episodes instead of single answers (needs the sandbox; see docs/agent.md).
    #[arg(long)]
    pub agent: bool,
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| format!("unknown tier {s:?} (easy, normal)"))
}

pub fn run(args: SftDataArgs) -> Result<()> {
    let mut tasks = Vec::new();
    for f in &args.tasks {
        let (loaded, errors) = load_tasks(f, BadLine::Skip)?;
        for e in &errors {
            eprintln!("note: {}: skipped {e}", f.display());
        }
        tasks.extend(loaded.into_iter().filter(|t| args.tier.is_empty() || args.tier.contains(&t.tier)));
    }
    if tasks.is_empty() {
        bail!("no task to convert");
    }
    let workers = args.workers.unwrap_or_else(|| GraderConfig::default().workers);
    let grader = if args.verify || args.agent {
        let g = Grader::new(GraderConfig { workers, ..GraderConfig::default() })?;
        g.prepare(&tasks)?;
        Some(g)
    } else {
        None
    };
    // Each example with the answer it gives.
    let (examples, golds): (Vec<Example>, Vec<String>) = if args.agent {
        let grader = grader.as_ref().expect("made for --agent");
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for t in tasks {
            from_task(&t)?; // refuses the test split
            match gold_transcript(grader, &t, &ToolConfig::default()) {
                Ok((messages, answer)) => {
                    out.push((Example { messages, id: Some(t.instance_id.clone()) }, answer));
                    kept.push(t);
                }
                Err(e) => eprintln!("note: skipped: {e:#}"),
            }
        }
        tasks = kept;
        out.into_iter().unzip()
    } else {
        let examples = tasks.iter().map(from_task).collect::<Result<Vec<_>>>()?;
        let golds = examples.iter().map(|e| e.messages.last().expect("an answer").content.clone()).collect();
        (examples, golds)
    };
    let (examples, dropped) = if args.verify {
        let grader = grader.as_ref().expect("made for --verify");
        let items: Vec<(&crate::skills::Task, &str)> = tasks.iter().zip(&golds).map(|(t, g)| (t, g.as_str())).collect();
        let grades = grader.grade_batch(&items);
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for ((e, t), g) in examples.into_iter().zip(&tasks).zip(&grades) {
            if g.reward >= 1.0 {
                kept.push(e);
            } else {
                dropped.push(format!("{} ({})", t.instance_id, g.reason));
            }
        }
        (kept, dropped)
    } else {
        (examples, Vec::new())
    };
    for d in &dropped {
        eprintln!("dropped: gold answer of {d} does not score 1");
    }
    write_examples(&args.out, &examples)?;
    eprintln!("wrote {} examples to {}{}", examples.len(), args.out.display(), if args.verify { format!(" ({} dropped by --verify)", dropped.len()) } else { String::new() });
    Ok(())
}
