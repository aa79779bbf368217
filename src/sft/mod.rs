//! The supervised warm start: masked next-token cross-entropy on chat transcripts, where only
//! the assistant's tokens count, before joint RL (`atomrl sft`, docs/sft.md).
//!
//! RL learns only from prompt groups where some samples succeed; a model that never produces a
//! well-formed answer gets no signal. A short supervised stage on verified answers (the skill
//! corpus's gold answers, `atomrl sft-data`) fixes the answer formats first. It runs on the
//! trainer core of RL ([`crate::rl::trainer::Trainer::step_ce`]) with the same optimizer,
//! schedule, checkpoints, metrics and resume, so its checkpoints load wherever a model does.

pub mod config;
pub mod data;
pub mod run;

pub use config::SftConfig;
pub use data::{from_task, load_examples, tokenize, write_examples, Example, Tokenized};
pub use run::{sft, SftOptions, SftOutcome};
