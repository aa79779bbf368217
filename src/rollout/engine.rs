//! The continuous-batching loop: at most `max_batch` sequences are active; each step runs one
//! forward call holding the prompts of newly admitted requests and one new token of every
//! running one, samples, and retires finished sequences so queued requests take their slots.

use std::collections::{HashMap, VecDeque};

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, SampleParams};
use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;

/// How to sample a completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// 0 samples greedily.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1 disables top-p.
    pub top_p: f32,
    /// 0 disables min-p.
    pub min_p: f32,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Text that ends a completion (kept in the output).
    pub stop: Vec<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0, max_new_tokens: 256, stop: Vec::new() }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.temperature >= 0.0 && self.temperature.is_finite(), "temperature must be >= 0, got {}", self.temperature);
        ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "top_p must be in (0, 1], got {}", self.top_p);
        ensure!((0.0..=1.0).contains(&self.min_p), "min_p must be in [0, 1], got {}", self.min_p);
        ensure!(self.max_new_tokens > 0, "max_new_tokens must be at least 1");
        Ok(())
    }
}

pub struct GenRequest {
    /// The random stream of this request: the same id, seed and logits give the same tokens.
    pub id: u32,
    pub prompt: Vec<u32>,
    pub sampling: SamplingConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens` or the model's context ran out.
    Length,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completion {
    pub id: u32,
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub completion_logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Tokens per KV-cache block.
    pub block_size: usize,
    /// Tokens that end every completion (the model's eos).
    pub stop_ids: Vec<u32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { max_batch: 8, block_size: 16, stop_ids: Vec::new() }
    }
}

struct Active {
    req: GenRequest,
    out: Completion,
    budget: usize,
    /// Tokens not yet in the cache: the prompt at first, then the last sampled token.
    pending: Vec<u32>,
}

/// Runs every request to completion. `on_token(id, token)` is called as tokens are drawn (for
/// streaming); `tokenizer` is needed only when requests use stop strings.
pub fn generate<B: Backend>(
    be: &B,
    model: &Model<B>,
    requests: Vec<GenRequest>,
    opts: &EngineOptions,
    tokenizer: Option<&Tokenizer>,
    mut on_token: impl FnMut(u32, u32),
) -> Result<Vec<Completion>> {
    let ctx = model.config.max_position_embeddings;
    let mut longest = 0;
    let mut ids: Vec<u32> = requests.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ensure!(ids.windows(2).all(|w| w[0] != w[1]), "request ids must be unique");
    for r in &requests {
        r.sampling.validate()?;
        ensure!(!r.prompt.is_empty(), "request {}: the prompt is empty", r.id);
        if r.prompt.len() >= ctx {
            bail!("request {}: the prompt has {} tokens but the model's context is {ctx}", r.id, r.prompt.len());
        }
        if !r.sampling.stop.is_empty() && tokenizer.is_none() {
            bail!("stop strings need a tokenizer");
        }
        longest = longest.max((r.prompt.len() + r.sampling.max_new_tokens).min(ctx));
    }
    let max_batch = opts.max_batch.max(1).min(requests.len().max(1));
    let mut cache = KvCache::new(be, &model.config, max_batch * (longest + opts.block_size), opts.block_size)?;
    let mut queue: VecDeque<GenRequest> = requests.into();
    let mut active: Vec<Active> = Vec::new();
    let mut done = Vec::new();

    while !queue.is_empty() || !active.is_empty() {
        while active.len() < max_batch {
            let Some(req) = queue.pop_front() else { break };
            let budget = req.sampling.max_new_tokens.min(ctx - req.prompt.len());
            let out = Completion { id: req.id, prompt_ids: req.prompt.clone(), completion_ids: Vec::new(), completion_logprobs: Vec::new(), finish_reason: FinishReason::Length };
            active.push(Active { pending: req.prompt.clone(), req, out, budget });
        }
        let (entries, rows, forks) = plan_step(&active);
        let entries: Vec<(u64, &[u32])> = entries.iter().map(|&i| (active[i].req.id as u64, active[i].pending.as_slice())).collect();
        let mut logits = model.forward_cached(be, &mut cache, &entries, false)?;
        if !forks.is_empty() {
            for &(leader, follower) in &forks {
                cache.fork(be, active[leader].req.id as u64, active[follower].req.id as u64)?;
            }
            logits = gather_rows(be, &logits, &rows, model.config.vocab_size)?;
        }
        let params: Vec<SampleParams> = active
            .iter()
            .map(|a| {
                let s = &a.req.sampling;
                SampleParams { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, min_p: s.min_p, seed: s.seed, stream: a.req.id, step: a.out.completion_ids.len() as u32 }
            })
            .collect();
        let drawn = be.sample(&logits, model.config.vocab_size, &params)?;

        let mut still = Vec::with_capacity(active.len());
        for (mut a, d) in active.into_iter().zip(drawn) {
            a.out.completion_ids.push(d.token);
            a.out.completion_logprobs.push(d.logprob);
            on_token(a.req.id, d.token);
            let stopped = opts.stop_ids.contains(&d.token) || hits_stop_string(&a, tokenizer)?;
            if stopped || a.out.completion_ids.len() >= a.budget {
                a.out.finish_reason = if stopped { FinishReason::Stop } else { FinishReason::Length };
                cache.release(a.req.id as u64);
                done.push(a.out);
            } else {
                a.pending = vec![d.token];
                still.push(a);
            }
        }
        active = still;
    }
    done.sort_by_key(|c| c.id);
    Ok(done)
}

/// Which active sequences go into the forward call, which logits row each one samples from, and
/// which (leader, follower) pairs share a prompt: a request admitted together with another one
/// holding the same prompt copies its leader's cache instead of recomputing the prompt.
fn plan_step(active: &[Active]) -> (Vec<usize>, Vec<usize>, Vec<(usize, usize)>) {
    let mut entries = Vec::new();
    let mut rows = vec![0; active.len()];
    let mut forks = Vec::new();
    let mut leaders: HashMap<&[u32], usize> = HashMap::new();
    for (i, a) in active.iter().enumerate() {
        let is_new = a.out.completion_ids.is_empty();
        if is_new {
            if let Some(&leader) = leaders.get(a.req.prompt.as_slice()) {
                forks.push((leader, i));
                rows[i] = rows[leader];
                continue;
            }
            leaders.insert(&a.req.prompt, i);
        }
        rows[i] = entries.len();
        entries.push(i);
    }
    (entries, rows, forks)
}

fn gather_rows<B: Backend>(be: &B, logits: &B::Tensor, rows: &[usize], vocab: usize) -> Result<B::Tensor> {
    let mut out = be.zeros(rows.len() * vocab)?;
    for (i, &r) in rows.iter().enumerate() {
        be.copy(&mut out, i * vocab, logits, r * vocab, vocab)?;
    }
    Ok(out)
}

fn hits_stop_string(a: &Active, tokenizer: Option<&Tokenizer>) -> Result<bool> {
    let (Some(tok), false) = (tokenizer, a.req.sampling.stop.is_empty()) else { return Ok(false) };
    // Only the tail can contain a stop string that just appeared.
    let tail = &a.out.completion_ids[a.out.completion_ids.len().saturating_sub(16)..];
    let text = tok.decode(tail)?;
    Ok(a.req.sampling.stop.iter().any(|s| text.contains(s.as_str())))
}
