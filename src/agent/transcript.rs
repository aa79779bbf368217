//! Gold agent transcripts for the supervised warm start of agent mode: the agent prompt, a look
//! at the code the gold patch touches (a real `view` in a real workspace, so the observation is
//! what the agent would see), for code editing the gold change made with `edit` calls, then
//! `submit`. The conversation renders through the chat template exactly as an episode's tokens
//! do, so `atomrl sft` on it teaches the tool-call format and the flow of an episode.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::skills::patch::{parse_search_replace, parse_unified_diff, FileEdit};
use crate::skills::{self, Grader, Skill, Task};
use crate::tokenizer::ChatMessage;

use super::prompt::agent_messages;
use super::tools::{ToolCall, ToolConfig, Toolbox};

/// A tool call as the model writes it.
pub fn call_text(call: &ToolCall) -> String {
    let (name, args) = match call {
        ToolCall::View { path, start, end } => ("view", json!({"path": path, "start": start, "end": end})),
        ToolCall::Search { pattern, path } => ("search", json!({"pattern": pattern, "path": path})),
        ToolCall::List { path } => ("list", json!({"path": path})),
        ToolCall::Run { command } => ("run", json!({"command": command})),
        ToolCall::Edit { path, search, replace } => ("edit", json!({"path": path, "search": search, "replace": replace})),
        ToolCall::Submit { answer } => ("submit", json!({"answer": answer})),
    };
    let args: serde_json::Map<String, serde_json::Value> = args.as_object().expect("an object").iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    format!("<tool_call>{{\"name\": \"{name}\", \"arguments\": {}}}</tool_call>", serde_json::Value::Object(args))
}

/// The file and line the gold patch (or for review, the candidate patch) changes first.
fn first_change(task: &Task) -> Option<(String, usize)> {
    let diff = match task.skill {
        Skill::Review => task.review.as_ref().map(|r| r.candidate_patch.as_str()).unwrap_or(""),
        _ => task.patch.as_str(),
    };
    parse_unified_diff(diff).into_iter().find_map(|e| match e {
        FileEdit::Diff { old_path: Some(path), hunks, .. } => Some((path, hunks.first().map_or(1, |h| h.old_start.max(1)))),
        _ => None,
    })
}

/// The calls of the gold episode, the last one `submit`.
pub fn gold_calls(task: &Task) -> Result<Vec<ToolCall>> {
    let mut calls = Vec::new();
    if let Some((path, line)) = first_change(task) {
        calls.push(ToolCall::View { path, start: Some(line.saturating_sub(8).max(1)), end: Some(line + 12) });
    } else {
        calls.push(ToolCall::List { path: None });
    }
    let gold = skills::gold_completion(task);
    if task.skill == Skill::Edit {
        let Some(edits) = parse_search_replace(&gold, None) else { bail!("{}: the gold edit is not search/replace blocks", task.instance_id) };
        for e in edits {
            let FileEdit::Replace { path, search, replace } = e else { bail!("{}: the gold edit is not search/replace blocks", task.instance_id) };
            calls.push(ToolCall::Edit { path, search, replace });
        }
        calls.push(ToolCall::Submit { answer: String::new() });
    } else {
        calls.push(ToolCall::Submit { answer: gold });
    }
    Ok(calls)
}

/// The gold episode of `task` as chat messages (tool results observed in a real workspace), and
/// the answer it submits (for code editing, the workspace's diff).
pub fn gold_transcript(grader: &Grader, task: &Task, cfg: &ToolConfig) -> Result<(Vec<ChatMessage>, String)> {
    let mut messages = agent_messages(task);
    let mut toolbox = Toolbox::open(grader, task, cfg).with_context(|| format!("{}: preparing the workspace", task.instance_id))?;
    let mut answer = String::new();
    for call in gold_calls(task)? {
        messages.push(ChatMessage::assistant(call_text(&call)));
        if let ToolCall::Submit { answer: a } = &call {
            answer = if task.skill == Skill::Edit { toolbox.diff()? } else { a.clone() };
            break;
        }
        let obs = toolbox.execute(&call);
        if !obs.ok {
            bail!("{}: the gold {} call failed: {}", task.instance_id, call.name(), obs.text);
        }
        messages.push(ChatMessage::new("tool", obs.text));
    }
    Ok((messages, answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tools::{parse_tool_call, CallParse};

    #[test]
    fn written_calls_parse_back_to_themselves() {
        let calls = [
            ToolCall::View { path: "a/b.py".into(), start: Some(3), end: None },
            ToolCall::Search { pattern: "def \\w+\\(".into(), path: None },
            ToolCall::List { path: Some("pkg".into()) },
            ToolCall::Run { command: "python -m pytest -q 'tests/t.py::x'".into() },
            ToolCall::Edit { path: "m.py".into(), search: "    return \"a\"\n".into(), replace: "\treturn 'b'\n".into() },
            ToolCall::Submit { answer: "```python\nprint(1)\n```".into() },
        ];
        for call in calls {
            let text = call_text(&call);
            assert!(text.starts_with(&format!("<tool_call>{{\"name\": \"{}\"", call.name())), "{text}");
            assert_eq!(parse_tool_call(&text), CallParse::Call(call), "{text}");
        }
    }
}
