//! Multi-turn agent rollouts: the policy works in a sandboxed copy of the task's repository with
//! tools (view, search, list, run, edit, submit) until it submits an answer or a budget runs out.
//!
//! - `tools`: the call format (parsed in `call`), and one episode's workspace with the tools
//!   that act on it;
//! - `prompt`: the skills' prompts with the tools described, and observations rendered by the
//!   model's own chat template;
//! - `episode`: one trajectory, token by token as generated, with the policy's tokens marked;
//! - `transcript`: gold episodes as chat transcripts for the warm start;
//! - `driver`: many episodes on one rollout engine, tools on worker threads while the engine
//!   decodes the other episodes.
//!
//! The final answer is graded by the skill's single-turn grader, so a skill's reward means the
//! same in both modes; for code editing, the agent's changes to the files are the patch.

mod call;
mod driver;
mod episode;
mod prompt;
mod support;
pub mod tools;
mod transcript;

use serde::{Deserialize, Serialize};

pub use driver::{run_episodes, run_episodes_with, AgentRequest, Scripted, TurnSource};
pub use episode::{decide, Decision, EpisodeEnd, Trajectory};
pub use prompt::{agent_messages, observation_text};
pub use tools::ToolConfig;
pub use transcript::{call_text, gold_calls, gold_transcript};

/// `[agent]` in a run config: the budgets of one episode and how tools run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Model turns per episode at most.
    pub max_turns: usize,
    /// Tokens sampled per turn at most.
    pub turn_tokens: usize,
    /// Prompt, turns and observations of one episode together, at most.
    pub max_trajectory_tokens: usize,
    /// Wall-clock seconds per episode at most, turns and tools together.
    pub episode_seconds: f64,
    /// Episodes open at once (each holds a workspace and its tokens in the KV cache).
    pub max_episodes: usize,
    /// Threads that run tools while the engine decodes other episodes; 0 runs each tool on the
    /// decoding thread, so every other episode waits for it (the no-overlap baseline).
    pub tool_workers: usize,
    /// Subtracted from an episode's reward for each malformed tool call.
    pub malformed_penalty: f32,
    pub tools: ToolConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_turns: 6,
            turn_tokens: 192,
            max_trajectory_tokens: 3072,
            episode_seconds: 300.0,
            max_episodes: 16,
            tool_workers: 2,
            malformed_penalty: 0.0,
            tools: ToolConfig::default(),
        }
    }
}

impl AgentConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_turns >= 1, "agent.max_turns must be at least 1");
        anyhow::ensure!(self.turn_tokens >= 1, "agent.turn_tokens must be at least 1");
        anyhow::ensure!(self.max_episodes >= 1, "agent.max_episodes must be at least 1");
        anyhow::ensure!(self.episode_seconds > 0.0, "agent.episode_seconds must be positive");
        anyhow::ensure!(self.malformed_penalty.is_finite() && self.malformed_penalty >= 0.0, "agent.malformed_penalty must be >= 0");
        Ok(())
    }
}
