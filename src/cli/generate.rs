//! `atomrl generate`: sample completions for prompts with a model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::cli::device::Device;
use crate::model::Model;
use crate::rollout::{generate, Completion, EngineOptions, GenRequest, SamplingConfig};
use crate::tokenizer::{ChatMessage, Tokenizer};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt; repeat for several (they are generated as one batch).
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// A file with one prompt per line (or one JSON string per line when it starts with `"`).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Treat each prompt as a user message and apply the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop when the completion contains this text (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Print one JSON object per prompt instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

fn read_prompts(args: &GenerateArgs) -> Result<Vec<String>> {
    let mut prompts = args.prompts.clone();
    if let Some(path) = &args.prompt_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            if line.starts_with('"') {
                prompts.push(serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON string", path.display(), i + 1))?);
            } else {
                prompts.push(line.to_string());
            }
        }
    }
    if prompts.is_empty() {
        bail!("no prompt given: use --prompt TEXT or --prompt-file FILE");
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        bail!("prompt {} is empty", i + 1);
    }
    Ok(prompts)
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let prompts = read_prompts(&args)?;
    match args.device.resolve()? {
        Device::Cpu => run_on(&Cpu, &args, &prompts),
        Device::Cuda => run_on(&crate::backend::cuda::CudaBackend::new(0)?, &args, &prompts),
        Device::Auto => unreachable!("resolve() never returns Auto"),
    }
}

fn run_on<B: Backend>(be: &B, args: &GenerateArgs, prompts: &[String]) -> Result<()> {
    let tokenizer = Tokenizer::from_dir(&args.model)?;
    let model = Model::load(be, &args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
    };
    let mut requests = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let text = if args.chat { tokenizer.apply_chat_template(&[ChatMessage::new("user", p.as_str())], true)? } else { p.clone() };
        let ids = tokenizer.encode(&text)?;
        if ids.is_empty() {
            bail!("prompt {} encodes to no tokens", i + 1);
        }
        requests.push(GenRequest { id: i as u32, prompt: ids, sampling: sampling.clone() });
    }
    let mut stop_ids = tokenizer.stop_ids.clone();
    stop_ids.extend(&model.config.eos_token_ids);
    let opts = EngineOptions { max_batch: args.batch, stop_ids, ..EngineOptions::default() };
    // Plain output streams the tokens of a single prompt as they come.
    let stream = !args.json && prompts.len() == 1;
    let mut shown = String::new();
    let mut ids_so_far = Vec::new();
    let completions = generate(be, &model, requests, &opts, Some(&tokenizer), |_, tok| {
        if stream {
            ids_so_far.push(tok);
            if let Ok(text) = tokenizer.decode(&ids_so_far) {
                if text.len() > shown.len() && text.starts_with(&shown) {
                    print!("{}", &text[shown.len()..]);
                    let _ = std::io::stdout().flush();
                    shown = text;
                }
            }
        }
    })?;
    if stream {
        println!();
        return Ok(());
    }
    for (c, prompt) in completions.iter().zip(prompts) {
        print_completion(&tokenizer, c, prompt, args.json)?;
    }
    Ok(())
}

fn print_completion(tokenizer: &Tokenizer, c: &Completion, prompt: &str, json: bool) -> Result<()> {
    let text = tokenizer.decode(&c.completion_ids)?;
    if json {
        let obj = serde_json::json!({
            "prompt": prompt,
            "prompt_ids": c.prompt_ids,
            "completion_ids": c.completion_ids,
            "completion_logprobs": c.completion_logprobs,
            "text": text,
            "finish_reason": c.finish_reason,
        });
        println!("{obj}");
    } else {
        println!("=== prompt {} ===\n{text}", c.id + 1);
    }
    Ok(())
}
