//! Reinforcement learning on top of the model: group-relative advantages, the policy-gradient
//! objective, AdamW with its schedule, training checkpoints, and the trainer core that runs one
//! optimizer step over micro-batches.

pub mod advantages;
pub mod checkpoint;
pub mod environment;
pub mod eval;
pub mod objective;
pub mod optimizer;
pub mod run;
pub mod run_config;
pub mod schedule;
pub mod step;
pub mod tasks;
pub mod trainer;
