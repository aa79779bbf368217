//! Reinforcement learning on top of the model: group-relative advantages, the policy-gradient
//! objective, AdamW with its schedule, and training checkpoints.

pub mod objective;
