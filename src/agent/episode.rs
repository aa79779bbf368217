//! One episode's trajectory, and what a turn's text means.

use std::collections::BTreeMap;

use serde::Serialize;

use super::tools::{parse_tool_call, CallParse, ToolCall};

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeEnd {
    /// The `submit` tool.
    Submitted,
    /// A turn without a tool call: its text is the answer.
    Answered,
    MaxTurns,
    MaxTokens,
    Timeout,
    /// The workspace could not be prepared.
    Error,
}

impl EpisodeEnd {
    /// Ended by a budget rather than by the agent.
    pub fn is_budget(self) -> bool {
        matches!(self, EpisodeEnd::MaxTurns | EpisodeEnd::MaxTokens | EpisodeEnd::Timeout)
    }
}

/// An episode as the trainer sees it: every token after the prompt exactly as it went through
/// the model, the policy's own tokens marked (observations are the environment's and are not
/// trained on), and the answer to grade.
#[derive(Clone, Debug)]
pub struct Trajectory {
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<u32>,
    /// Per token of `tokens`: sampled by the policy.
    pub policy: Vec<bool>,
    /// Per token: the sampling log-prob (0 for observation tokens).
    pub logprobs: Vec<f32>,
    pub answer: String,
    pub end: EpisodeEnd,
    pub turns: usize,
    /// Calls per tool name.
    pub tool_calls: BTreeMap<String, u32>,
    /// Tool calls that failed (a missing file, a search that matched nothing, ...).
    pub tool_failures: u32,
    /// Turns whose tool call could not be parsed.
    pub malformed: u32,
    /// Seconds spent running tools (opening the workspace included).
    pub tool_seconds: f64,
    /// Why the episode ended in `Error`.
    pub error: Option<String>,
}

impl Trajectory {
    pub fn new(prompt_ids: Vec<u32>) -> Self {
        Trajectory {
            prompt_ids,
            tokens: Vec::new(),
            policy: Vec::new(),
            logprobs: Vec::new(),
            answer: String::new(),
            end: EpisodeEnd::Answered,
            turns: 0,
            tool_calls: BTreeMap::new(),
            tool_failures: 0,
            malformed: 0,
            tool_seconds: 0.0,
            error: None,
        }
    }

    /// Prompt and everything after it.
    pub fn len(&self) -> usize {
        self.prompt_ids.len() + self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push_turn(&mut self, ids: &[u32], logprobs: &[f32]) {
        self.tokens.extend(ids);
        self.policy.extend(std::iter::repeat_n(true, ids.len()));
        self.logprobs.extend(logprobs);
        self.turns += 1;
    }

    pub fn push_observation(&mut self, ids: &[u32]) {
        self.tokens.extend(ids);
        self.policy.extend(std::iter::repeat_n(false, ids.len()));
        self.logprobs.extend(std::iter::repeat_n(0.0, ids.len()));
    }
}

/// What a turn asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Run a tool and show the result.
    Tool(ToolCall),
    /// A tool call that could not be read: the message goes back as the observation.
    Malformed(String),
    /// The episode is over with this answer (`explicit`: through `submit`).
    Answer { text: String, explicit: bool },
}

/// Reads a turn's text (its stop token already removed).
pub fn decide(turn: &str) -> Decision {
    match parse_tool_call(turn) {
        CallParse::Call(ToolCall::Submit { answer }) => Decision::Answer { text: answer, explicit: true },
        CallParse::Call(call) => Decision::Tool(call),
        CallParse::Malformed(msg) => Decision::Malformed(msg),
        CallParse::None => Decision::Answer { text: turn.trim().to_string(), explicit: false },
    }
}
