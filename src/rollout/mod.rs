//! Generation: batched prefill and decode over the paged KV cache with continuous batching,
//! sampling on the backend, per-token logprobs of the chosen tokens.

mod engine;

pub use engine::{generate, Completion, Engine, EngineOptions, FinishReason, GenRequest, SamplingConfig};
