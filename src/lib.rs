//! atomrl: reinforcement learning for LLM coding agents over five atomic skills.
//!
//! One runtime does everything: `model` runs the transformer on a `backend`, `rollout` generates
//! with it, `skills` grade the completions inside the `sandbox`, and `rl` turns rewards into a
//! GRPO update of the same weights.

pub mod agent;
pub mod backend;
pub mod cli;
pub mod config;
pub mod convert;
pub mod metrics;
pub mod model;
pub mod rl;
pub mod rng;
pub mod rollout;
pub mod sandbox;
pub mod sft;
pub mod skills;
pub mod synth;
pub mod tokenizer;
