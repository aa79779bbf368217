//! Pulling answers out of completions: forgiving about formatting (code fences, prose around the
//! answer, bullets, bold), strict about content.

/// A fenced code block: its info string (language) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub lang: String,
    pub body: String,
}

/// The fenced blocks of `text`, in order. An unclosed final fence runs to the end of the text.
pub fn code_blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            match cur.take() {
                None => cur = Some((info.trim().to_lowercase(), Vec::new())),
                Some((lang, body)) => out.push(Block {
                    lang,
                    body: join_lines(&body),
                }),
            }
        } else if let Some((_, body)) = cur.as_mut() {
            body.push(line);
        }
    }
    if let Some((lang, body)) = cur {
        out.push(Block {
            lang,
            body: join_lines(&body),
        });
    }
    out
}

fn join_lines(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The Python code of a completion: the last ```python block; else the last fenced block;
/// else, with no fence at all, the whole completion if it parses as Python.
pub fn python_code(text: &str) -> Option<String> {
    let blocks = code_blocks(text);
    let pick = blocks
        .iter()
        .rev()
        .find(|b| matches!(b.lang.as_str(), "python" | "py" | "python3"))
        .or_else(|| blocks.iter().rev().find(|b| b.lang.is_empty()))
        .or_else(|| blocks.last());
    match pick {
        Some(b) if !b.body.trim().is_empty() => Some(b.body.clone()),
        Some(_) => None,
        None => {
            let t = text.trim();
            (!t.is_empty() && crate::skills::pysrc::syntax_ok(t)).then(|| format!("{t}\n"))
        }
    }
}

/// Strips markdown decoration from one line: bullets, numbering, backticks, bold.
pub fn clean_line(line: &str) -> &str {
    let mut s = line.trim();
    loop {
        let before = s;
        for p in ["- ", "* ", "+ ", "• "] {
            s = s.strip_prefix(p).unwrap_or(s).trim_start();
        }
        let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 && (s[digits..].starts_with(". ") || s[digits..].starts_with(") ")) {
            s = s[digits + 2..].trim_start();
        }
        s = s
            .trim_matches(|c: char| c == '`' || c == '*' || c == '"' || c == '\'')
            .trim();
        if s == before {
            return s;
        }
    }
}
