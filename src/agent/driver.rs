//! Many episodes on one rollout engine. The engine decodes every episode that is waiting for the
//! model; a turn that calls a tool hands the episode's workspace to a worker thread and the engine
//! goes on with the others; when the observation is back, its tokens are appended to the
//! episode's cached sequence and the episode decodes again. No batch waits for its slowest member.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::backend::Backend;
use crate::model::Model;
use crate::rollout::{Completion, Engine, EngineOptions, GenRequest, SamplingConfig};
use crate::skills::{Grader, Skill, Task};
use crate::tokenizer::{ChatMessage, Tokenizer};

use super::episode::{decide, Decision, EpisodeEnd, Trajectory};
use super::prompt::observation_text;
use super::tools::{Observation, ToolCall, Toolbox};
use super::AgentConfig;

/// Where turns come from: the rollout engine, or a script (tests, and replaying a trajectory).
pub trait TurnSource {
    /// Starts a turn of sequence `req.id`: `req.prompt` goes on top of what it has so far.
    fn submit(&mut self, req: GenRequest) -> Result<()>;
    /// Advances every running turn; returns the turns that finished.
    fn step(&mut self, tokenizer: &Tokenizer) -> Result<Vec<Completion>>;
    fn is_idle(&self) -> bool;
    fn release(&mut self, id: u32);
}

impl<B: Backend> TurnSource for Engine<'_, B> {
    fn submit(&mut self, req: GenRequest) -> Result<()> {
        Engine::submit(self, req)
    }
    fn step(&mut self, tokenizer: &Tokenizer) -> Result<Vec<Completion>> {
        Engine::step(self, Some(tokenizer), &mut |_, _| {})
    }
    fn is_idle(&self) -> bool {
        Engine::is_idle(self)
    }
    fn release(&mut self, id: u32) {
        Engine::release(self, id)
    }
}

/// A policy that says fixed texts: turn `n` of episode `i` is `turns[i][n]` (then it stops
/// talking, which answers with an empty text).
pub struct Scripted {
    turns: Vec<VecDeque<String>>,
    queued: Vec<GenRequest>,
}

impl Scripted {
    pub fn new(turns: Vec<Vec<String>>) -> Self {
        Scripted { turns: turns.into_iter().map(VecDeque::from).collect(), queued: Vec::new() }
    }
}

impl TurnSource for Scripted {
    fn submit(&mut self, req: GenRequest) -> Result<()> {
        self.queued.push(req);
        Ok(())
    }
    fn step(&mut self, tokenizer: &Tokenizer) -> Result<Vec<Completion>> {
        std::mem::take(&mut self.queued)
            .into_iter()
            .map(|req| {
                let text = self.turns.get_mut(req.id as usize).and_then(|t| t.pop_front()).unwrap_or_default();
                let mut ids = tokenizer.encode(&text)?;
                if ids.is_empty() {
                    ids.extend(tokenizer.stop_ids.first());
                }
                let n = ids.len();
                Ok(Completion { id: req.id, prompt_ids: req.prompt, completion_ids: ids, completion_logprobs: vec![0.0; n], finish_reason: crate::rollout::FinishReason::Stop })
            })
            .collect()
    }
    fn is_idle(&self) -> bool {
        self.queued.is_empty()
    }
    fn release(&mut self, _id: u32) {}
}

/// One episode to run: the task, its first messages and their tokens.
pub struct AgentRequest<'t> {
    pub task: &'t Task,
    pub messages: Vec<ChatMessage>,
    pub prompt_ids: Vec<u32>,
}

/// A tool call for a worker: the episode's toolbox travels with it (opened on first use).
struct Job<'g> {
    episode: usize,
    toolbox: Option<Toolbox<'g>>,
    task: &'g Task,
    call: ToolCall,
}

struct Done<'g> {
    episode: usize,
    toolbox: Option<Toolbox<'g>>,
    observation: Observation,
    seconds: f64,
}

/// Opens the toolbox if needed and runs the call. A workspace that cannot be prepared is an
/// observation with no toolbox, which ends the episode.
fn run_tool<'g>(grader: &'g Grader, cfg: &AgentConfig, job: Job<'g>) -> Done<'g> {
    let Job { episode, toolbox, task, call } = job;
    let started = Instant::now();
    let toolbox = match toolbox {
        Some(t) => Ok(t),
        None => Toolbox::open(grader, task, &cfg.tools),
    };
    match toolbox {
        Ok(mut t) => {
            let observation = t.execute(&call);
            Done { episode, toolbox: Some(t), observation, seconds: started.elapsed().as_secs_f64() }
        }
        Err(e) => {
            let observation = Observation { text: format!("error: the repository could not be prepared: {e:#}"), ok: false };
            Done { episode, toolbox: None, observation, seconds: started.elapsed().as_secs_f64() }
        }
    }
}

struct Open<'g> {
    traj: Trajectory,
    toolbox: Option<Toolbox<'g>>,
    started: Instant,
}

/// Runs every request as an episode of the policy `model` and returns the trajectories in
/// request order. `sampling` holds the temperature, filters and seed (each episode is its own
/// random stream); its `max_new_tokens` and stop strings are set per turn.
#[allow(clippy::too_many_arguments)]
pub fn run_episodes<B: Backend>(
    be: &B,
    model: &Model<B>,
    tokenizer: &Tokenizer,
    grader: &Grader,
    requests: &[AgentRequest],
    cfg: &AgentConfig,
    sampling: &SamplingConfig,
    engine_opts: &EngineOptions,
) -> Result<Vec<Trajectory>> {
    cfg.validate()?;
    // The model's context is a token budget too.
    let cfg = &AgentConfig { max_trajectory_tokens: cfg.max_trajectory_tokens.min(model.config.max_position_embeddings), ..cfg.clone() };
    let capacity = cfg.max_episodes * (cfg.max_trajectory_tokens + 2 * engine_opts.block_size);
    let mut engine = Engine::new(be, model, engine_opts.clone(), capacity)?;
    run_episodes_with(&mut engine, tokenizer, grader, requests, cfg, sampling)
}

/// `run_episodes` with turns from any source.
pub fn run_episodes_with(
    source: &mut dyn TurnSource,
    tokenizer: &Tokenizer,
    grader: &Grader,
    requests: &[AgentRequest],
    cfg: &AgentConfig,
    sampling: &SamplingConfig,
) -> Result<Vec<Trajectory>> {
    cfg.validate()?;
    let (jobs_tx, jobs_rx) = channel::<Job>();
    let (done_tx, done_rx) = channel::<Done>();
    let jobs_rx = Mutex::new(jobs_rx);
    std::thread::scope(|scope| {
        for _ in 0..cfg.tool_workers {
            let (jobs_rx, done_tx) = (&jobs_rx, done_tx.clone());
            scope.spawn(move || loop {
                let job = { jobs_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() };
                let Ok(job) = job else { break };
                if done_tx.send(run_tool(grader, cfg, job)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut driver = Driver { tokenizer, grader, requests, cfg, sampling, source, open: HashMap::new(), results: vec![None; requests.len()], jobs: Some(jobs_tx), in_tools: 0 };
        let out = driver.run(&done_rx);
        driver.jobs = None; // ends the workers
        out
    })
}

struct Driver<'a, 'g> {
    tokenizer: &'a Tokenizer,
    grader: &'g Grader,
    requests: &'g [AgentRequest<'g>],
    cfg: &'a AgentConfig,
    sampling: &'a SamplingConfig,
    source: &'a mut dyn TurnSource,
    open: HashMap<usize, Open<'g>>,
    results: Vec<Option<Trajectory>>,
    jobs: Option<Sender<Job<'g>>>,
    in_tools: usize,
}

impl<'a, 'g> Driver<'a, 'g> {
    fn run(&mut self, done_rx: &Receiver<Done<'g>>) -> Result<Vec<Trajectory>> {
        let mut waiting: VecDeque<usize> = (0..self.requests.len()).collect();
        loop {
            while self.open.len() < self.cfg.max_episodes {
                let Some(i) = waiting.pop_front() else { break };
                self.start(i)?;
            }
            if self.open.is_empty() {
                break;
            }
            // Observations that are back; block for one only when nothing can decode.
            while let Ok(done) = done_rx.try_recv() {
                self.observed(done)?;
            }
            if self.source.is_idle() {
                if self.in_tools > 0 {
                    let done = done_rx.recv_timeout(Duration::from_secs(3600))?;
                    self.observed(done)?;
                }
                continue;
            }
            for turn in self.source.step(self.tokenizer)? {
                self.turn(turn)?;
            }
        }
        Ok(self.results.iter_mut().map(|t| t.take().expect("every episode finishes")).collect())
    }

    fn turn_sampling(&self, traj: &Trajectory) -> SamplingConfig {
        let room = self.cfg.max_trajectory_tokens.saturating_sub(traj.len() + 1).max(1);
        SamplingConfig { max_new_tokens: self.cfg.turn_tokens.min(room), stop: vec!["</tool_call>".into()], ..self.sampling.clone() }
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let traj = Trajectory::new(self.requests[i].prompt_ids.clone());
        let sampling = self.turn_sampling(&traj);
        self.source.submit(GenRequest { id: i as u32, prompt: traj.prompt_ids.clone(), sampling })?;
        self.open.insert(i, Open { traj, toolbox: None, started: Instant::now() });
        Ok(())
    }

    /// A turn finished: record it, then answer, run its tool, or report the malformed call.
    fn turn(&mut self, c: Completion) -> Result<()> {
        let i = c.id as usize;
        let ep = self.open.get_mut(&i).expect("a finished turn belongs to an open episode");
        ep.traj.push_turn(&c.completion_ids, &c.completion_logprobs);
        let ends_with_stop = c.completion_ids.last().is_some_and(|t| self.tokenizer.stop_ids.contains(t));
        let body = if ends_with_stop { &c.completion_ids[..c.completion_ids.len() - 1] } else { &c.completion_ids[..] };
        let text = self.tokenizer.decode(body)?;
        match decide(&text) {
            Decision::Answer { text, explicit } => self.finish(i, text, if explicit { EpisodeEnd::Submitted } else { EpisodeEnd::Answered }),
            Decision::Malformed(msg) => {
                ep.traj.malformed += 1;
                self.continue_with(i, &format!("error: {msg}"))
            }
            Decision::Tool(call) => {
                *ep.traj.tool_calls.entry(call.name().to_string()).or_insert(0) += 1;
                let job = Job { episode: i, toolbox: ep.toolbox.take(), task: self.requests[i].task, call };
                match &self.jobs {
                    Some(tx) if self.cfg.tool_workers > 0 => {
                        self.in_tools += 1;
                        tx.send(job).map_err(|_| anyhow::anyhow!("the tool workers stopped"))?;
                        Ok(())
                    }
                    _ => {
                        let done = run_tool(self.grader, self.cfg, job);
                        self.in_tools += 1;
                        self.observed(done)
                    }
                }
            }
        }
    }

    fn observed(&mut self, done: Done<'g>) -> Result<()> {
        self.in_tools -= 1;
        let i = done.episode;
        let ep = self.open.get_mut(&i).expect("a tool result belongs to an open episode");
        ep.traj.tool_seconds += done.seconds;
        if !done.observation.ok {
            ep.traj.tool_failures += 1;
        }
        let Some(toolbox) = done.toolbox else {
            ep.traj.error = Some(done.observation.text.clone());
            return self.finish(i, String::new(), EpisodeEnd::Error);
        };
        ep.toolbox = Some(toolbox);
        self.continue_with(i, &done.observation.text)
    }

    /// Appends the observation and queues the next turn, unless a budget is spent.
    fn continue_with(&mut self, i: usize, observation: &str) -> Result<()> {
        let ep = &self.open[&i];
        if ep.traj.turns >= self.cfg.max_turns {
            return self.finish(i, String::new(), EpisodeEnd::MaxTurns);
        }
        if ep.started.elapsed().as_secs_f64() > self.cfg.episode_seconds {
            return self.finish(i, String::new(), EpisodeEnd::Timeout);
        }
        let last = ep.traj.tokens.last().copied();
        let turn_end = match last {
            Some(t) if self.tokenizer.stop_ids.contains(&t) => Some(self.tokenizer.decode(&[t])?),
            _ => None,
        };
        let text = observation_text(self.tokenizer, &self.requests[i].messages, observation, turn_end.as_deref())?;
        let ids = self.tokenizer.encode(&text)?;
        if ep.traj.len() + ids.len() + 1 >= self.cfg.max_trajectory_tokens {
            return self.finish(i, String::new(), EpisodeEnd::MaxTokens);
        }
        let ep = self.open.get_mut(&i).expect("open");
        ep.traj.push_observation(&ids);
        let sampling = self.turn_sampling(&self.open[&i].traj);
        self.source.submit(GenRequest { id: i as u32, prompt: ids, sampling })
    }

    /// Closes the episode: for code editing without a written patch, the workspace's changes
    /// are the answer; the workspace and the cached tokens are freed.
    fn finish(&mut self, i: usize, answer: String, end: EpisodeEnd) -> Result<()> {
        let mut ep = self.open.remove(&i).expect("open");
        self.source.release(i as u32);
        ep.traj.answer = answer;
        ep.traj.end = end;
        if self.requests[i].task.skill == Skill::Edit && ep.traj.answer.trim().is_empty() {
            if let Some(toolbox) = &ep.toolbox {
                ep.traj.answer = toolbox.diff().unwrap_or_default();
            }
        }
        self.results[i] = Some(ep.traj);
        Ok(())
    }
}
