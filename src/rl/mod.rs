//! Reinforcement learning on top of the model: group-relative advantages, the policy-gradient
//! objective, AdamW with its schedule, training checkpoints, and the trainer core that runs one
//! optimizer step over micro-batches.

pub mod advantages;
pub mod checkpoint;
pub mod objective;
pub mod optimizer;
pub mod schedule;
pub mod trainer;
