//! Supervised examples: chat transcripts as users bring them from TRL or axolotl
//! (`{"messages": [{"role", "content"}, ...]}` per JSONL line), rendered with the model's chat
//! template and tokenized with a mask that is 1 exactly on the tokens of assistant turns.
//!
//! The mask comes from rendering prefixes, so it is exact for any template that renders a
//! conversation as the concatenation of its turns: for an assistant message `i`, the template's
//! text for `messages[..i]` with the generation prompt is a prefix of its text for
//! `messages[..=i]`, and the characters between the two are the assistant's (its content and the
//! end-of-turn marker the template closes it with; the role header is the prompt's). A token is
//! an assistant token when it starts inside such a span. A template that rewrites earlier turns
//! depending on later ones (so the prefixes disagree) is refused for that example, by name.
//!
//! The skill corpus becomes such examples through [`from_task`]: the skill's prompt messages and
//! its gold answer as the assistant's turn.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::skills::{self, Task};
use crate::tokenizer::{ChatMessage, Tokenizer};

/// One training example. Fields other than `messages` (ids, sources) are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub messages: Vec<ChatMessage>,
    /// Where it came from (the task's `instance_id` for converted tasks), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// An example as token ids, with 1 on the tokens of assistant turns.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokenized {
    pub tokens: Vec<u32>,
    pub assistant: Vec<bool>,
}

impl Tokenized {
    /// Per row `r` (which predicts token `r+1`): 1 when that target is an assistant token.
    pub fn row_mask(&self) -> Vec<f32> {
        let n = self.tokens.len();
        (0..n).map(|r| if r + 1 < n && self.assistant[r + 1] { 1.0 } else { 0.0 }).collect()
    }

    pub fn assistant_tokens(&self) -> usize {
        self.assistant.iter().filter(|&&a| a).count()
    }
}

/// Reads a JSONL file of examples; blank lines are skipped, any other bad line fails the load
/// with its line number.
pub fn load_examples(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example = serde_json::from_str(line).with_context(|| format!("{}:{}: not an example of the form {{\"messages\": [{{\"role\", \"content\"}}, ...]}}", path.display(), i + 1))?;
        ensure!(!ex.messages.is_empty(), "{}:{}: no messages", path.display(), i + 1);
        out.push(ex);
    }
    Ok(out)
}

/// Writes examples as JSONL.
pub fn write_examples(path: &Path, examples: &[Example]) -> Result<()> {
    let mut text = String::new();
    for e in examples {
        text.push_str(&serde_json::to_string(e)?);
        text.push('\n');
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Renders `messages` with the chat template and marks the assistant turns' tokens.
pub fn tokenize(tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Tokenized> {
    let full = tokenizer.apply_chat_template(messages, false)?;
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = tokenizer.apply_chat_template(&messages[..i], true).with_context(|| format!("rendering the {i} messages before assistant message {i}"))?;
        let through = tokenizer.apply_chat_template(&messages[..=i], false)?;
        if !through.starts_with(&before) || !full.starts_with(&through) {
            bail!("the chat template does not render message {i} as an extension of the messages before it, so its tokens cannot be told apart");
        }
        spans.push((before.len(), through.len()));
    }
    let (tokens, offsets) = tokenizer.encode_with_offsets(&full)?;
    let assistant = offsets.iter().map(|&(s, _)| spans.iter().any(|&(a, b)| s >= a && s < b)).collect();
    Ok(Tokenized { tokens, assistant })
}

/// A skill task as an example: its prompt and its gold answer. Tasks of the test split are
/// refused (they are the held-out evaluation).
pub fn from_task(task: &Task) -> Result<Example> {
    if task.split.as_deref() == Some("test") {
        bail!("{} belongs to the test split; only train tasks become training examples", task.instance_id);
    }
    let mut messages = skills::prompt(task);
    messages.push(ChatMessage::assistant(skills::gold_completion(task)));
    Ok(Example { messages, id: Some(task.instance_id.clone()) })
}
