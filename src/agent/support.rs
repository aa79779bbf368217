//! Helpers of the tools: walking the workspace and cutting text to fit an observation.

use std::path::{Path, PathBuf};

/// Directories never searched, listed or diffed.
const SKIP_DIRS: &[&str] = &[
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".git",
];
/// Files larger than this are not searched.
pub(crate) const MAX_SEARCH_FILE_BYTES: u64 = 2 << 20;
/// Entries `list` shows per directory.
const LIST_PER_DIR: usize = 40;

/// A regular file's bytes, None if it is absent (or not a regular file).
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() => Ok(Some(std::fs::read(path)?)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn skipped(name: &str, skip_hidden: bool) -> bool {
    SKIP_DIRS.contains(&name) || (skip_hidden && name.starts_with('.'))
}

/// Regular files under `dir` (symlinks are not followed; caches, compiled Python and, with
/// `skip_hidden`, hidden entries left out).
pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>, skip_hidden: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(ft) = entry.file_type() else { continue };
        if skipped(&name, skip_hidden) {
            continue;
        }
        if ft.is_dir() {
            walk(&entry.path(), out, skip_hidden);
        } else if ft.is_file() && !name.ends_with(".pyc") && !name.ends_with(".pyo") {
            out.push(entry.path());
        }
    }
}

/// Two levels of `dir`, directories first, each sorted; directories end in `/`.
pub(crate) fn list_dir(dir: &Path, depth: usize, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut items: Vec<(bool, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().ok()?;
            if skipped(&name, true) || name.ends_with(".pyc") {
                return None;
            }
            Some((!ft.is_dir(), name))
        })
        .collect();
    items.sort();
    let indent = "  ".repeat(depth + 1);
    for (i, (is_file, name)) in items.iter().enumerate() {
        if i == LIST_PER_DIR {
            out.push_str(&format!("{indent}... {} more\n", items.len() - i));
            break;
        }
        if *is_file {
            out.push_str(&format!("{indent}{name}\n"));
        } else {
            out.push_str(&format!("{indent}{name}/\n"));
            if depth == 0 {
                list_dir(&dir.join(name), depth + 1, out);
            }
        }
    }
}

/// Lines that start like view's output (`  12| `).
pub(crate) fn looks_numbered(text: &str) -> bool {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| {
            let t = l.trim_start();
            let digits = t.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && t[digits..].starts_with('|')
        })
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first `max` characters of a line, with `...` when cut.
pub(crate) fn clip_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The truncation marker for `dropped` characters.
fn marker(dropped: usize) -> String {
    format!("\n[... truncated {dropped} characters]")
}

/// How many characters of a `n`-character text to keep so that they, the marker and `extra`
/// characters fit in `max` (the marker's length is bounded with `n` dropped).
fn kept_chars(n: usize, max: usize, extra: usize) -> usize {
    max.saturating_sub(marker(n).chars().count() + extra)
}

fn byte_at(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// `text` cut to at most `max` characters, its end replaced by a marker saying how many were
/// dropped.
pub(crate) fn clip_end(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let keep = kept_chars(n, max, 0);
    format!("{}{}", &text[..byte_at(text, keep)], marker(n - keep))
}

/// `text` cut to at most `max` characters by replacing its middle with a marker (the end of a
/// command's output, where errors and summaries are, is kept).
pub(crate) fn clip_middle(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let keep = kept_chars(n, max, 1);
    let head = keep * 2 / 5;
    let tail = keep - head;
    format!(
        "{}{}\n{}",
        &text[..byte_at(text, head)],
        marker(n - keep),
        &text[byte_at(text, n - tail)..]
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_marks_what_was_dropped() {
        assert_eq!(clip_end("abcdef", 6), "abcdef");
        let text = "é".repeat(100);
        let cut = clip_end(&text, 60);
        assert_eq!(
            cut,
            format!("{}\n[... truncated 71 characters]", "é".repeat(29))
        );
        assert!(cut.chars().count() <= 60);
        let text: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let cut = clip_middle(&text, 60);
        assert_eq!(
            cut,
            format!(
                "{}\n[... truncated 72 characters]\n{}",
                &text[..11],
                &text[83..]
            )
        );
        assert!(cut.chars().count() <= 60);
        assert_eq!(clip_middle("short", 10), "short");
        // Too small a budget for the marker: the marker alone.
        assert_eq!(clip_end("abcdef", 4), "\n[... truncated 6 characters]");
    }

    #[test]
    fn numbered_lines_are_recognised() {
        assert!(looks_numbered("  12| def f():\n  13|     return 1\n"));
        assert!(!looks_numbered("def f():\n    return 1\n"));
        assert!(!looks_numbered(""));
    }
}
