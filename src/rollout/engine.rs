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
    /// Tokens not yet in the cache: the turn's new tokens at first, then the last sampled token.
    pending: Vec<u32>,
    /// The sequence had nothing cached when admitted (it may share a prompt with another).
    fresh: bool,
}

/// The continuous-batching engine as a value, for callers that interleave generation with other
/// work: each `submit` starts a turn (a new sequence, or more tokens on top of a sequence kept in
/// the cache from an earlier turn), each `step` decodes one token of every admitted turn and
/// returns the turns that finished. A finished sequence stays cached until `release`, so a
/// multi-turn episode appends its next observation without recomputing anything.
pub struct Engine<'a, B: Backend> {
    be: &'a B,
    model: &'a Model<B>,
    opts: EngineOptions,
    cache: KvCache<B>,
    queue: VecDeque<GenRequest>,
    active: Vec<Active>,
    /// Tokens sampled so far per sequence: the Philox step, so later turns draw fresh numbers.
    drawn: HashMap<u32, u32>,
    /// The last token of a sequence's finished turn: sampled, not yet in the cache; the next
    /// turn feeds it first.
    tail: HashMap<u32, u32>,
}

impl<'a, B: Backend> Engine<'a, B> {
    /// An engine whose cache holds `capacity_tokens` tokens across all sequences.
    pub fn new(be: &'a B, model: &'a Model<B>, opts: EngineOptions, capacity_tokens: usize) -> Result<Self> {
        let cache = KvCache::new(be, &model.config, capacity_tokens, opts.block_size)?;
        Ok(Engine { be, model, opts, cache, queue: VecDeque::new(), active: Vec::new(), drawn: HashMap::new(), tail: HashMap::new() })
    }

    /// Queues a turn: `req.prompt` is appended to sequence `req.id` (new or cached) and then up to
    /// `max_new_tokens` are sampled. A sequence runs one turn at a time.
    pub fn submit(&mut self, req: GenRequest) -> Result<()> {
        req.sampling.validate()?;
        ensure!(!req.prompt.is_empty(), "request {}: the prompt is empty", req.id);
        ensure!(
            !self.queue.iter().any(|q| q.id == req.id) && !self.active.iter().any(|a| a.req.id == req.id),
            "request {} already has a turn in progress",
            req.id
        );
        let ctx = self.model.config.max_position_embeddings;
        let total = self.uncached_len(req.id) + req.prompt.len();
        if total >= ctx {
            bail!("request {}: the prompt has {total} tokens but the model's context is {ctx}", req.id);
        }
        self.queue.push_back(req);
        Ok(())
    }

    /// Tokens of sequence `id` so far (cached, plus the last sampled token).
    pub fn len(&self, id: u32) -> usize {
        self.uncached_len(id)
    }

    fn uncached_len(&self, id: u32) -> usize {
        self.cache.len(id as u64) + self.tail.contains_key(&id) as usize
    }

    /// No turn queued or running.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    /// Forgets sequence `id` and frees its cache.
    pub fn release(&mut self, id: u32) {
        self.cache.release(id as u64);
        self.drawn.remove(&id);
        self.tail.remove(&id);
    }

    /// Admits queued turns up to `max_batch` (as long as their tokens fit in the cache), runs one
    /// forward call and one sampling step, and returns the turns that finished, in any order.
    /// `on_token(id, token)` sees every drawn token; `tokenizer` is needed for stop strings.
    pub fn step(&mut self, tokenizer: Option<&Tokenizer>, on_token: &mut impl FnMut(u32, u32)) -> Result<Vec<Completion>> {
        self.admit()?;
        if self.active.is_empty() {
            return Ok(Vec::new());
        }
        let (be, model) = (self.be, self.model);
        let (entries, rows, forks) = plan_step(&self.active);
        let entries: Vec<(u64, &[u32])> = entries.iter().map(|&i| (self.active[i].req.id as u64, self.active[i].pending.as_slice())).collect();
        let mut logits = model.forward_cached(be, &mut self.cache, &entries, false)?;
        if !forks.is_empty() {
            for &(leader, follower) in &forks {
                self.cache.fork(be, self.active[leader].req.id as u64, self.active[follower].req.id as u64)?;
            }
            logits = gather_rows(be, &logits, &rows, model.config.vocab_size)?;
        }
        let params: Vec<SampleParams> = self
            .active
            .iter()
            .map(|a| {
                let s = &a.req.sampling;
                let step = self.drawn.get(&a.req.id).copied().unwrap_or(0);
                SampleParams { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, min_p: s.min_p, seed: s.seed, stream: a.req.id, step }
            })
            .collect();
        let drawn = be.sample(&logits, model.config.vocab_size, &params)?;

        let mut finished = Vec::new();
        let mut still = Vec::with_capacity(self.active.len());
        for (mut a, d) in std::mem::take(&mut self.active).into_iter().zip(drawn) {
            a.out.completion_ids.push(d.token);
            a.out.completion_logprobs.push(d.logprob);
            *self.drawn.entry(a.req.id).or_insert(0) += 1;
            a.fresh = false;
            on_token(a.req.id, d.token);
            let stopped = self.opts.stop_ids.contains(&d.token) || hits_stop_string(&a, tokenizer)?;
            if stopped || a.out.completion_ids.len() >= a.budget {
                a.out.finish_reason = if stopped { FinishReason::Stop } else { FinishReason::Length };
                self.tail.insert(a.req.id, d.token);
                finished.push(a.out);
            } else {
                a.pending = vec![d.token];
                still.push(a);
            }
        }
        self.active = still;
        Ok(finished)
    }

    fn admit(&mut self) -> Result<()> {
        let ctx = self.model.config.max_position_embeddings;
        while self.active.len() < self.opts.max_batch.max(1) {
            let Some(req) = self.queue.front() else { break };
            let cached = self.uncached_len(req.id);
            let need = req.prompt.len() + req.sampling.max_new_tokens;
            if !self.cache.can_grow(req.id as u64, need.min(ctx - cached) + 1) {
                ensure!(!self.active.is_empty(), "request {}: {need} more tokens do not fit in the KV cache even alone", req.id);
                break; // wait for running turns to finish and free blocks
            }
            let req = self.queue.pop_front().expect("front exists");
            let budget = req.sampling.max_new_tokens.min(ctx - cached - req.prompt.len());
            let out = Completion { id: req.id, prompt_ids: req.prompt.clone(), completion_ids: Vec::new(), completion_logprobs: Vec::new(), finish_reason: FinishReason::Length };
            let pending: Vec<u32> = self.tail.remove(&req.id).into_iter().chain(req.prompt.iter().copied()).collect();
            self.active.push(Active { pending, req, out, budget, fresh: cached == 0 });
        }
        Ok(())
    }
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
        if !r.sampling.stop.is_empty() && tokenizer.is_none() {
            bail!("stop strings need a tokenizer");
        }
        longest = longest.max((r.prompt.len() + r.sampling.max_new_tokens).min(ctx));
    }
    let max_batch = opts.max_batch.max(1).min(requests.len().max(1));
    let opts = EngineOptions { max_batch, ..opts.clone() };
    let capacity = max_batch * (longest + opts.block_size);
    let mut engine = Engine::new(be, model, opts, capacity)?;
    for r in requests {
        engine.submit(r)?;
    }
    let mut done = Vec::new();
    while !engine.is_idle() {
        for c in engine.step(tokenizer, &mut on_token)? {
            engine.release(c.id);
            done.push(c);
        }
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
        if a.fresh {
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
