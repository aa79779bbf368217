//! What the agent reads: the skill's own prompt with the tools described, and each observation
//! as the model's chat template renders a tool message.

use anyhow::{Context, Result};

use crate::skills::{self, Skill, Task};
use crate::tokenizer::{ChatMessage, Tokenizer};

use super::tools::TOOLS_DOC;

/// The skill's system and user messages, with the tools and how to finish added to the system
/// message. The answer format is the single-turn one, so the same grader scores it.
pub fn agent_messages(task: &Task) -> Vec<ChatMessage> {
    let mut messages = skills::prompt(task);
    let finish = match task.skill {
        Skill::Edit => "Change the files with the edit tool (run the tests if you like), then call submit with an empty answer.",
        _ => "When you know the answer, call submit with the answer, written in the format asked for above.",
    };
    let tools = format!("You work in the task's repository (the current directory) with tools.\n{TOOLS_DOC}\n{finish}");
    match messages.iter_mut().find(|m| m.role == "system") {
        Some(system) => system.content = format!("{}\n\n{tools}", system.content),
        None => messages.insert(0, ChatMessage::system(tools)),
    }
    messages
}

/// Stands for the assistant's turn, whose tokens are kept exactly as sampled, never re-rendered.
const TURN: &str = "\u{1}atomrl-turn\u{1}";

/// The text that follows an assistant turn: the end of its message, a tool message holding
/// `observation`, and the start of the next assistant message, as the chat template writes
/// them. `history` is the episode's first messages. `turn_end` is the text of the stop token
/// the turn ended with, if any: it is in the trajectory already and is not repeated.
pub fn observation_text(tokenizer: &Tokenizer, history: &[ChatMessage], observation: &str, turn_end: Option<&str>) -> Result<String> {
    let mut messages = history.to_vec();
    messages.push(ChatMessage::assistant(TURN));
    messages.push(ChatMessage::new("tool", observation));
    let rendered = tokenizer.apply_chat_template(&messages, true)?;
    let (_, after) = rendered.split_once(TURN).context("the chat template does not render assistant messages verbatim")?;
    Ok(match turn_end {
        Some(end) if !end.is_empty() => after.strip_prefix(end).unwrap_or(after),
        _ => after,
    }
    .to_string())
}
