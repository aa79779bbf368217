//! Tool calls as the model writes them: Hermes/Qwen-style JSON inside `<tool_call>` tags,
//!
//! ```text
//! <tool_call>{"name": "view", "arguments": {"path": "pkg/mod.py", "start": 10, "end": 40}}</tool_call>
//! ```
//!
//! Parsing is forgiving about the wrapping (whitespace, a missing closing tag at the end of the
//! text, a ```json fence inside the tags, `arguments` given as a JSON string) and strict about
//! the content (the tool name, the argument names and their types).

use super::support::one_line;
use serde_json::{Map, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The six tools, their calls written out for a system prompt.
pub const TOOLS_DOC: &str = r#"You work in a copy of the repository; paths are relative to its root. To use a tool, write one call and stop:
<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>
The result comes back in the next message. One call per turn.

Tools:
- view: show a file with line numbers, a range of lines at a time.
  {"path": "pkg/mod.py", "start": 10, "end": 60}   (start and end are optional)
- search: find a regular expression in the files, one line per match.
  {"pattern": "def parse_", "path": "pkg"}   (path is optional: default the whole repository)
- list: show files and directories, two levels deep.
  {"path": "pkg"}   (path is optional)
- run: run a shell command in the repository root, e.g. the tests. Short time limit, no network.
  {"command": "python -m pytest -q tests/test_mod.py"}
- edit: replace text in a file. "search" must occur exactly once in the file: copy the lines from
  view without the line numbers. An empty "search" creates a new file.
  {"path": "pkg/mod.py", "search": "    return a - b\n", "replace": "    return a + b\n"}
- submit: finish. "answer" is your final answer (leave it empty when your edits are the answer).
  {"answer": "..."}

Example:
<tool_call>{"name": "view", "arguments": {"path": "pkg/mod.py", "start": 1, "end": 40}}</tool_call>"#;

/// One tool call, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCall {
    /// Lines `start..=end` (1-based) of a file.
    View {
        path: String,
        start: Option<usize>,
        end: Option<usize>,
    },
    /// A regular expression over the text files under `path` (default: the root).
    Search {
        pattern: String,
        path: Option<String>,
    },
    /// The directory tree under `path` (default: the root).
    List { path: Option<String> },
    /// `sh -c COMMAND` in the sandbox.
    Run { command: String },
    /// Replace the one occurrence of `search` in a file (an empty `search` creates the file).
    Edit {
        path: String,
        search: String,
        replace: String,
    },
    /// The end of the episode.
    Submit { answer: String },
}

impl ToolCall {
    pub fn name(&self) -> &'static str {
        match self {
            ToolCall::View { .. } => "view",
            ToolCall::Search { .. } => "search",
            ToolCall::List { .. } => "list",
            ToolCall::Run { .. } => "run",
            ToolCall::Edit { .. } => "edit",
            ToolCall::Submit { .. } => "submit",
        }
    }
}

/// What the first `<tool_call>` of a turn holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallParse {
    /// No `<tool_call>` tag at all.
    None,
    Call(ToolCall),
    /// A one-line message saying what is wrong and showing the expected format.
    Malformed(String),
}

/// The tool names, in the order of `TOOLS_DOC`.
pub const TOOL_NAMES: [&str; 6] = ["view", "search", "list", "run", "edit", "submit"];

/// An example call of each tool.
fn usage(tool: &str) -> &'static str {
    match tool {
        "view" => {
            r#"<tool_call>{"name": "view", "arguments": {"path": "pkg/mod.py", "start": 1, "end": 40}}</tool_call> (start and end optional)"#
        }
        "search" => {
            r#"<tool_call>{"name": "search", "arguments": {"pattern": "def name", "path": "pkg"}}</tool_call> (path optional)"#
        }
        "list" => {
            r#"<tool_call>{"name": "list", "arguments": {"path": "pkg"}}</tool_call> (path optional)"#
        }
        "run" => {
            r#"<tool_call>{"name": "run", "arguments": {"command": "python -m pytest -q"}}</tool_call>"#
        }
        "edit" => {
            r#"<tool_call>{"name": "edit", "arguments": {"path": "pkg/mod.py", "search": "old text", "replace": "new text"}}</tool_call>"#
        }
        "submit" => {
            r#"<tool_call>{"name": "submit", "arguments": {"answer": "..."}}</tool_call> (answer may be empty)"#
        }
        _ => r#"<tool_call>{"name": "view", "arguments": {"path": "pkg/mod.py"}}</tool_call>"#,
    }
}

fn malformed_call(problem: &str) -> CallParse {
    CallParse::Malformed(one_line(&format!(
        "malformed tool call: {problem}. Expected <tool_call>{{\"name\": TOOL, \"arguments\": {{...}}}}</tool_call> with TOOL one of {}",
        TOOL_NAMES.join(", ")
    )))
}

fn malformed_args(tool: &str, problem: &str) -> CallParse {
    CallParse::Malformed(one_line(&format!(
        "malformed {tool} call: {problem}. Usage: {}",
        usage(tool)
    )))
}

/// The text of the first `<tool_call>` block: up to its closing tag, the next opening tag or
/// the end of the text; None without an opening tag.
fn first_block(turn: &str) -> Option<&str> {
    let start = turn.find(OPEN)? + OPEN.len();
    let rest = &turn[start..];
    let end = [rest.find(CLOSE), rest.find(OPEN)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let mut body = rest[..end].trim();
    // A closing tag cut short at the end of the text.
    if end == rest.len() {
        if let Some(i) = body.rfind("</") {
            if CLOSE.starts_with(&body[i..]) {
                body = body[..i].trim_end();
            }
        }
    }
    Some(body)
}

/// Removes a Markdown code fence around the JSON (```json ... ```).
fn strip_fence(body: &str) -> &str {
    let Some(rest) = body.strip_prefix("```") else {
        return body;
    };
    let rest = match rest.find('\n') {
        Some(i) if rest[..i].trim().chars().all(|c| c.is_ascii_alphanumeric()) => &rest[i + 1..],
        _ => rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()),
    };
    let rest = rest.trim_end();
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Escapes control characters that appear raw inside JSON strings.
fn escape_raw_controls(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if (c as u32) < 0x20 {
                match c {
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    _ => out.push_str(&format!("\\u{:04x}", c as u32)),
                }
                continue;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// Parses the first `<tool_call>` block of a model turn.
pub fn parse_tool_call(turn: &str) -> CallParse {
    let Some(body) = first_block(turn) else {
        return CallParse::None;
    };
    let body = strip_fence(body);
    if body.is_empty() {
        return malformed_call("the tags are empty");
    }
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        // Raw newlines and tabs inside strings (multi-line code) are forgiven.
        Err(e) => match serde_json::from_str(&escape_raw_controls(body)) {
            Ok(v) => v,
            Err(_) => return malformed_call(&format!("invalid JSON ({e})")),
        },
    };
    let Value::Object(mut obj) = value else {
        return malformed_call("the call must be a JSON object");
    };
    let name = match obj.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => return malformed_call("\"name\" must be a string"),
        None => return malformed_call("missing \"name\""),
    };
    let name = name.trim().to_string();
    if !TOOL_NAMES.contains(&name.as_str()) {
        return malformed_call(&format!("unknown tool {name:?}"));
    }
    let args = match obj.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return malformed_args(&name, "\"arguments\" must be a JSON object"),
            Err(e) => {
                return malformed_args(&name, &format!("\"arguments\" is not valid JSON ({e})"))
            }
        },
        Some(_) => return malformed_args(&name, "\"arguments\" must be a JSON object"),
    };
    if let Some(key) = obj.keys().next() {
        return malformed_call(&format!(
            "unexpected key {key:?} (only \"name\" and \"arguments\")"
        ));
    }
    match build(&name, args) {
        Ok(call) => CallParse::Call(call),
        Err(problem) => malformed_args(&name, &problem),
    }
}

/// The arguments of one call, taken one by one; whatever is left over is an error.
struct Args {
    map: Map<String, Value>,
}

impl Args {
    fn string(&mut self, key: &str) -> Result<String, String> {
        self.opt_string(key)?
            .ok_or_else(|| format!("missing argument \"{key}\""))
    }

    fn opt_string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("\"{key}\" must be a string, got {}", kind(&v))),
        }
    }

    fn opt_line(&mut self, key: &str) -> Result<Option<usize>, String> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 => Ok(Some(v.min(usize::MAX as u64) as usize)),
                _ => Err(format!(
                    "\"{key}\" must be a line number (1 or more), got {n}"
                )),
            },
            Some(v) => Err(format!("\"{key}\" must be a number, got {}", kind(&v))),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.map.keys().next() {
            Some(k) => Err(format!("unknown argument \"{k}\"")),
            None => Ok(()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty(key: &str, s: String) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!("\"{key}\" is empty"))
    } else {
        Ok(s)
    }
}

fn build(name: &str, map: Map<String, Value>) -> Result<ToolCall, String> {
    let mut a = Args { map };
    let call = match name {
        "view" => ToolCall::View {
            path: non_empty("path", a.string("path")?)?,
            start: a.opt_line("start")?,
            end: a.opt_line("end")?,
        },
        "search" => ToolCall::Search {
            pattern: non_empty("pattern", a.string("pattern")?)?,
            path: a.opt_string("path")?,
        },
        "list" => ToolCall::List {
            path: a.opt_string("path")?,
        },
        "run" => ToolCall::Run {
            command: non_empty("command", a.string("command")?)?,
        },
        "edit" => ToolCall::Edit {
            path: non_empty("path", a.string("path")?)?,
            search: a.string("search")?,
            replace: a.string("replace")?,
        },
        "submit" => ToolCall::Submit {
            answer: a.opt_string("answer")?.unwrap_or_default(),
        },
        _ => return Err(format!("unknown tool {name:?}")),
    };
    a.finish()?;
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(text: &str) -> ToolCall {
        match parse_tool_call(text) {
            CallParse::Call(c) => c,
            other => panic!("{text:?} → {other:?}"),
        }
    }

    fn malformed(text: &str) -> String {
        match parse_tool_call(text) {
            CallParse::Malformed(m) => {
                assert!(!m.contains('\n'), "one line: {m:?}");
                assert!(m.contains("<tool_call>"), "shows the format: {m}");
                m
            }
            other => panic!("{text:?} → {other:?}, want Malformed"),
        }
    }

    #[test]
    fn every_tool_parses() {
        assert_eq!(
            call(
                r#"<tool_call>{"name": "view", "arguments": {"path": "pkg/mod.py", "start": 10, "end": 40}}</tool_call>"#
            ),
            ToolCall::View {
                path: "pkg/mod.py".into(),
                start: Some(10),
                end: Some(40)
            }
        );
        assert_eq!(
            call(r#"<tool_call>{"name": "view", "arguments": {"path": "a.py"}}</tool_call>"#),
            ToolCall::View {
                path: "a.py".into(),
                start: None,
                end: None
            }
        );
        assert_eq!(
            call(
                r#"<tool_call>{"name": "search", "arguments": {"pattern": "def f\\(", "path": "pkg"}}</tool_call>"#
            ),
            ToolCall::Search {
                pattern: "def f\\(".into(),
                path: Some("pkg".into())
            }
        );
        assert_eq!(
            call(r#"<tool_call>{"name": "search", "arguments": {"pattern": "x"}}</tool_call>"#),
            ToolCall::Search {
                pattern: "x".into(),
                path: None
            }
        );
        assert_eq!(
            call(r#"<tool_call>{"name": "list", "arguments": {}}</tool_call>"#),
            ToolCall::List { path: None }
        );
        assert_eq!(
            call(r#"<tool_call>{"name": "list"}</tool_call>"#),
            ToolCall::List { path: None }
        );
        assert_eq!(
            call(
                r#"<tool_call>{"name": "run", "arguments": {"command": "python -m pytest -q"}}</tool_call>"#
            ),
            ToolCall::Run {
                command: "python -m pytest -q".into()
            }
        );
        assert_eq!(
            call(
                r#"<tool_call>{"name": "edit", "arguments": {"path": "a.py", "search": "x = 1\n", "replace": ""}}</tool_call>"#
            ),
            ToolCall::Edit {
                path: "a.py".into(),
                search: "x = 1\n".into(),
                replace: String::new()
            }
        );
        assert_eq!(
            call(
                r#"<tool_call>{"name": "submit", "arguments": {"answer": "pkg/mod.py"}}</tool_call>"#
            ),
            ToolCall::Submit {
                answer: "pkg/mod.py".into()
            }
        );
        assert_eq!(
            call(r#"<tool_call>{"name": "submit", "arguments": {}}</tool_call>"#),
            ToolCall::Submit {
                answer: String::new()
            }
        );
        for (text, name) in [
            (r#"<tool_call>{"name": "list"}</tool_call>"#, "list"),
            (r#"<tool_call>{"name": "submit"}</tool_call>"#, "submit"),
        ] {
            assert_eq!(call(text).name(), name);
        }
    }

    #[test]
    fn wrapping_is_forgiven() {
        let want = ToolCall::Run {
            command: "ls".into(),
        };
        // Arguments as a JSON string holding JSON.
        assert_eq!(
            call(r#"<tool_call>{"name": "run", "arguments": "{\"command\": \"ls\"}"}</tool_call>"#),
            want
        );
        // No closing tag at the end of the text, or one cut short.
        assert_eq!(
            call(r#"Let me look. <tool_call>{"name": "run", "arguments": {"command": "ls"}}"#),
            want
        );
        assert_eq!(
            call("<tool_call>\n{\"name\": \"run\", \"arguments\": {\"command\": \"ls\"}}\n</tool_"),
            want
        );
        // Fenced JSON and whitespace.
        assert_eq!(
            call("<tool_call>\n```json\n{\"name\": \"run\",\n \"arguments\": {\"command\": \"ls\"}}\n```\n</tool_call>"),
            want
        );
        assert_eq!(
            call("<tool_call>```{\"name\": \"run\", \"arguments\": {\"command\": \"ls\"}}```</tool_call>"),
            want
        );
        assert_eq!(
            call("I will list.\n\n<tool_call>  {\"name\": \" run \", \"arguments\": {\"command\": \"ls\"}}  </tool_call>\n"),
            want
        );
    }

    #[test]
    fn raw_newlines_inside_strings_are_forgiven() {
        let text = "<tool_call>{\"name\": \"edit\", \"arguments\": {\"path\": \"a.py\", \"search\": \"def f():\n\treturn 1\n\", \"replace\": \"x = \\\"q\\\"\n\"}}</tool_call>";
        assert_eq!(
            call(text),
            ToolCall::Edit {
                path: "a.py".into(),
                search: "def f():\n\treturn 1\n".into(),
                replace: "x = \"q\"\n".into()
            }
        );
    }

    #[test]
    fn only_the_first_call_is_taken() {
        let text = r#"<tool_call>{"name": "list", "arguments": {"path": "a"}}</tool_call>
<tool_call>{"name": "run", "arguments": {"command": "ls"}}</tool_call>"#;
        assert_eq!(
            call(text),
            ToolCall::List {
                path: Some("a".into())
            }
        );
        // An unclosed first call ends at the next opening tag.
        let text = r#"<tool_call>{"name": "list", "arguments": {"path": "a"}}
<tool_call>{"name": "run", "arguments": {"command": "ls"}}</tool_call>"#;
        assert_eq!(
            call(text),
            ToolCall::List {
                path: Some("a".into())
            }
        );
        // A broken first call is not skipped for a good second one.
        let text =
            r#"<tool_call>{"name": "list", </tool_call><tool_call>{"name": "list"}</tool_call>"#;
        malformed(text);
    }

    #[test]
    fn no_tag_is_none() {
        assert_eq!(
            parse_tool_call("The bug is in pkg/mod.py."),
            CallParse::None
        );
        assert_eq!(
            parse_tool_call(r#"{"name": "list", "arguments": {}}"#),
            CallParse::None
        );
        assert_eq!(parse_tool_call(""), CallParse::None);
    }

    #[test]
    fn bad_content_is_malformed_with_the_problem_named() {
        let m = malformed(r#"<tool_call>{"name": "view", "arguments": {"path": }}</tool_call>"#);
        assert!(m.contains("invalid JSON"), "{m}");
        let m =
            malformed(r#"<tool_call>{"name": "open", "arguments": {"path": "a.py"}}</tool_call>"#);
        assert!(
            m.contains("unknown tool \"open\"") && m.contains("view, search"),
            "{m}"
        );
        let m = malformed(r#"<tool_call>{"name": "view", "arguments": {}}</tool_call>"#);
        assert!(
            m.contains("missing argument \"path\"") && m.contains("\"name\": \"view\""),
            "{m}"
        );
        let m = malformed(
            r#"<tool_call>{"name": "edit", "arguments": {"path": "a.py", "search": "x"}}</tool_call>"#,
        );
        assert!(m.contains("missing argument \"replace\""), "{m}");
        let m = malformed(
            r#"<tool_call>{"name": "view", "arguments": {"path": "a.py", "start": "ten"}}</tool_call>"#,
        );
        assert!(m.contains("\"start\" must be a number"), "{m}");
        let m = malformed(
            r#"<tool_call>{"name": "view", "arguments": {"path": "a.py", "start": 0}}</tool_call>"#,
        );
        assert!(m.contains("\"start\" must be a line number"), "{m}");
        let m = malformed(
            r#"<tool_call>{"name": "run", "arguments": {"command": ["ls"]}}</tool_call>"#,
        );
        assert!(
            m.contains("\"command\" must be a string, got an array"),
            "{m}"
        );
        let m =
            malformed(r#"<tool_call>{"name": "run", "arguments": {"command": "  "}}</tool_call>"#);
        assert!(m.contains("\"command\" is empty"), "{m}");
        let m =
            malformed(r#"<tool_call>{"name": "view", "arguments": {"file": "a.py"}}</tool_call>"#);
        assert!(m.contains("missing argument \"path\""), "{m}");
        let m = malformed(
            r#"<tool_call>{"name": "view", "arguments": {"path": "a.py", "file": "a.py"}}</tool_call>"#,
        );
        assert!(m.contains("unknown argument \"file\""), "{m}");
        let m = malformed(r#"<tool_call>{"arguments": {"path": "a.py"}}</tool_call>"#);
        assert!(m.contains("missing \"name\""), "{m}");
        let m =
            malformed(r#"<tool_call>{"name": "run", "arguments": "{\"command\": "}</tool_call>"#);
        assert!(m.contains("\"arguments\" is not valid JSON"), "{m}");
        let m = malformed(r#"<tool_call>{"name": "run", "arguments": [1]}</tool_call>"#);
        assert!(m.contains("\"arguments\" must be a JSON object"), "{m}");
        let m = malformed(r#"<tool_call>["run"]</tool_call>"#);
        assert!(m.contains("JSON object"), "{m}");
        let m = malformed("<tool_call></tool_call>");
        assert!(m.contains("empty"), "{m}");
        let m = malformed(r#"<tool_call>{"name": "list"}} trailing</tool_call>"#);
        assert!(m.contains("invalid JSON"), "{m}");
        let m = malformed(r#"<tool_call>{"name": "list", "id": 3}</tool_call>"#);
        assert!(m.contains("unexpected key \"id\""), "{m}");
    }

    #[test]
    fn the_doc_names_every_tool() {
        for name in TOOL_NAMES {
            assert!(TOOLS_DOC.contains(&format!("- {name}:")), "{name}");
        }
        assert!(TOOLS_DOC.split_whitespace().count() < 400);
    }
}
