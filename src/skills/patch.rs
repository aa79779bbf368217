//! Patches: unified diffs (applied with offset and fuzz, like `patch --fuzz`, as SWE-bench
//! falls back to) and search/replace blocks, both parsed forgivingly from model output, and
//! unified diffs written from two versions of a file.

use std::path::{Component, Path, PathBuf};

/// One change to one file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileEdit {
    /// Replace the first occurrence of `search` with `replace`.
    Replace {
        path: String,
        search: String,
        replace: String,
    },
    /// Apply the hunks of a unified diff; `old_path` is None for a new file, `new_path` None
    /// for a deletion.
    Diff {
        old_path: Option<String>,
        new_path: Option<String>,
        hunks: Vec<Hunk>,
    },
}

impl FileEdit {
    pub fn path(&self) -> &str {
        match self {
            FileEdit::Replace { path, .. } => path,
            FileEdit::Diff {
                old_path, new_path, ..
            } => new_path.as_deref().or(old_path.as_deref()).unwrap_or(""),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hunk {
    /// 1-based line of the hunk in the old file, as written in the header (a hint only).
    pub old_start: usize,
    pub lines: Vec<HunkLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HunkLine {
    Context(String),
    Remove(String),
    Add(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("unsafe path {0:?}")]
    UnsafePath(String),
    #[error("{0}: no such file")]
    Missing(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{path}: hunk {hunk} does not apply")]
    Hunk { path: String, hunk: usize },
    #[error("{0}: search text not found")]
    SearchNotFound(String),
    #[error("{0}: {1}")]
    Io(String, String),
}

/// Files a unified diff touches (new paths; old ones for deletions), in order.
pub fn files_of_diff(diff: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in parse_unified_diff(diff) {
        let p = e.path().to_string();
        if !p.is_empty() && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn strip_prefix_path(raw: &str) -> Option<String> {
    // "a/x.py\t2024-01-01 ..." → "x.py"; "/dev/null" → None.
    let raw = raw.split('\t').next().unwrap_or("").trim();
    let raw = raw.trim_matches('"');
    if raw == "/dev/null" || raw.is_empty() {
        return None;
    }
    let p = raw
        .strip_prefix("a/")
        .or_else(|| raw.strip_prefix("b/"))
        .unwrap_or(raw);
    Some(p.to_string())
}

fn parse_hunk_header(line: &str) -> Option<(usize, Option<(usize, usize)>)> {
    // "@@ -12,7 +12,8 @@ def f():" → (12, Some((7, 8))); "@@ ... @@" → (0, None).
    let rest = line.strip_prefix("@@")?;
    let end = rest.find("@@").unwrap_or(rest.len());
    let mut parts = rest[..end].split_whitespace();
    let old = parts.next().and_then(|s| s.strip_prefix('-'));
    let new = parts.next().and_then(|s| s.strip_prefix('+'));
    let range = |s: &str| -> Option<(usize, usize)> {
        let mut it = s.split(',');
        let a = it.next()?.parse().ok()?;
        let b = match it.next() {
            Some(n) => n.parse().ok()?,
            None => 1,
        };
        Some((a, b))
    };
    match (old.and_then(range), new.and_then(range)) {
        (Some((os, oc)), Some((_, nc))) => Some((os, Some((oc, nc)))),
        _ => Some((0, None)),
    }
}

/// Parses every file section of a unified diff; text outside sections is ignored.
pub fn parse_unified_diff(text: &str) -> Vec<FileEdit> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let is_header =
            lines[i].starts_with("--- ") && i + 1 < lines.len() && lines[i + 1].starts_with("+++ ");
        if !is_header {
            i += 1;
            continue;
        }
        let old_path = strip_prefix_path(&lines[i][4..]);
        let new_path = strip_prefix_path(&lines[i + 1][4..]);
        i += 2;
        let mut hunks = Vec::new();
        while i < lines.len() && lines[i].starts_with("@@") {
            let (old_start, counts) = parse_hunk_header(lines[i]).unwrap_or((0, None));
            i += 1;
            let (mut old_left, mut new_left) = counts.unwrap_or((usize::MAX, usize::MAX));
            let mut body = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                if counts.is_some() && old_left == 0 && new_left == 0 {
                    break;
                }
                if counts.is_none()
                    && (l.starts_with("@@")
                        || l.starts_with("diff --git")
                        || (l.starts_with("--- ")
                            && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "))))
                {
                    break;
                }
                if l.starts_with("@@") || l.starts_with("diff --git") || l.starts_with("```") {
                    break;
                }
                match l.chars().next() {
                    Some('+') => {
                        body.push(HunkLine::Add(l[1..].to_string()));
                        new_left = new_left.saturating_sub(1);
                    }
                    Some('-') => {
                        body.push(HunkLine::Remove(l[1..].to_string()));
                        old_left = old_left.saturating_sub(1);
                    }
                    Some(' ') => {
                        body.push(HunkLine::Context(l[1..].to_string()));
                        old_left = old_left.saturating_sub(1);
                        new_left = new_left.saturating_sub(1);
                    }
                    Some('\\') => {}
                    None => {
                        // An empty context line whose leading space was lost.
                        body.push(HunkLine::Context(String::new()));
                        old_left = old_left.saturating_sub(1);
                        new_left = new_left.saturating_sub(1);
                    }
                    Some(_) => break,
                }
                i += 1;
            }
            // Skip "\ No newline at end of file" left after the counted lines.
            while i < lines.len() && lines[i].starts_with('\\') {
                i += 1;
            }
            if !body.is_empty() {
                hunks.push(Hunk {
                    old_start,
                    lines: body,
                });
            }
        }
        if old_path.is_some() || new_path.is_some() {
            out.push(FileEdit::Diff {
                old_path,
                new_path,
                hunks,
            });
        }
    }
    out
}

/// Parses search/replace blocks:
///
/// ```text
/// path/to/file.py
/// <<<<<<< SEARCH
/// old lines
/// =======
/// new lines
/// >>>>>>> REPLACE
/// ```
///
/// The path is the nearest non-empty line above the block that is not a code fence; when there
/// is none, `default_path` is used.
pub fn parse_search_replace(text: &str, default_path: Option<&str>) -> Option<Vec<FileEdit>> {
    let lines: Vec<&str> = text.lines().collect();
    let marker = |l: &str, c: char, word: &str| {
        let t = l.trim();
        let n = t.chars().take_while(|&x| x == c).count();
        n >= 5 && t[n..].trim().eq_ignore_ascii_case(word)
    };
    let mut out = Vec::new();
    let mut i = 0;
    let mut any_block = false;
    while i < lines.len() {
        if !marker(lines[i], '<', "SEARCH") {
            i += 1;
            continue;
        }
        any_block = true;
        let path = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with("```"))
            .and_then(clean_path_line)
            .or_else(|| default_path.map(str::to_string));
        let sep = (i + 1..lines.len()).find(|&j| marker(lines[j], '=', ""))?;
        let end = (sep + 1..lines.len()).find(|&j| marker(lines[j], '>', "REPLACE"))?;
        let join = |ls: &[&str]| {
            let mut s = ls.join("\n");
            if !ls.is_empty() {
                s.push('\n');
            }
            s
        };
        let path = path?;
        out.push(FileEdit::Replace {
            path,
            search: join(&lines[i + 1..sep]),
            replace: join(&lines[sep + 1..end]),
        });
        i = end + 1;
    }
    (any_block && !out.is_empty()).then_some(out)
}

/// A line naming a file: "`a/b.py`", "File: a/b.py", "### a/b.py", "# a/b.py".
fn clean_path_line(line: &str) -> Option<String> {
    let mut s = line.trim();
    for prefix in ["###", "##", "#", "File:", "file:", "Path:", "path:", "**"] {
        s = s.strip_prefix(prefix).unwrap_or(s).trim();
    }
    let s = s
        .trim_matches(|c: char| c == '`' || c == '*' || c == ':' || c == '"' || c == '\'')
        .trim();
    let looks_like_path = !s.is_empty()
        && !s.contains(char::is_whitespace)
        && (s.ends_with(".py") || s.contains('/'))
        && !s.starts_with('<')
        && !s.starts_with('=');
    looks_like_path.then(|| s.to_string())
}

/// Checks that a relative path stays inside the tree: no absolute paths, no `..`, and no
/// symlink anywhere along it.
pub fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, PatchError> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() {
        return Err(PatchError::UnsafePath(rel.to_string()));
    }
    let mut cur = root.to_path_buf();
    for c in p.components() {
        match c {
            Component::Normal(part) => {
                cur.push(part);
                if let Ok(md) = std::fs::symlink_metadata(&cur) {
                    if md.file_type().is_symlink() {
                        return Err(PatchError::UnsafePath(rel.to_string()));
                    }
                }
            }
            Component::CurDir => {}
            _ => return Err(PatchError::UnsafePath(rel.to_string())),
        }
    }
    Ok(cur)
}

/// Applies edits to the tree at `root`, each file all or nothing, in order. `fuzz` is how many
/// context lines may be dropped from each end of a hunk (GNU patch's `--fuzz`).
pub fn apply_edits(root: &Path, edits: &[FileEdit], fuzz: usize) -> Result<(), PatchError> {
    for e in edits {
        apply_one(root, e, fuzz)?;
    }
    Ok(())
}

fn read(path: &Path, rel: &str) -> Result<String, PatchError> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(PatchError::Missing(rel.to_string()))
        }
        Err(e) => Err(PatchError::Io(rel.to_string(), e.to_string())),
    }
}

fn write(path: &Path, rel: &str, text: &str) -> Result<(), PatchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PatchError::Io(rel.to_string(), e.to_string()))?;
    }
    std::fs::write(path, text).map_err(|e| PatchError::Io(rel.to_string(), e.to_string()))
}

fn apply_one(root: &Path, edit: &FileEdit, fuzz: usize) -> Result<(), PatchError> {
    match edit {
        FileEdit::Replace {
            path,
            search,
            replace,
        } => {
            let full = safe_join(root, path)?;
            if search.trim().is_empty() {
                // An empty search creates the file (or appends to an empty one).
                let old = read(&full, path).unwrap_or_default();
                if !old.trim().is_empty() {
                    return Err(PatchError::Exists(path.clone()));
                }
                return write(&full, path, replace);
            }
            let old = read(&full, path)?;
            let new = replace_once(&old, search, replace)
                .ok_or_else(|| PatchError::SearchNotFound(path.clone()))?;
            write(&full, path, &new)
        }
        FileEdit::Diff {
            old_path,
            new_path,
            hunks,
        } => match (old_path, new_path) {
            (None, Some(p)) => {
                let full = safe_join(root, p)?;
                if full.exists() {
                    return Err(PatchError::Exists(p.clone()));
                }
                let mut text = String::new();
                for h in hunks {
                    for l in &h.lines {
                        if let HunkLine::Add(s) | HunkLine::Context(s) = l {
                            text.push_str(s);
                            text.push('\n');
                        }
                    }
                }
                write(&full, p, &text)
            }
            (Some(p), None) => {
                let full = safe_join(root, p)?;
                read(&full, p)?;
                std::fs::remove_file(&full).map_err(|e| PatchError::Io(p.clone(), e.to_string()))
            }
            (old, Some(p)) => {
                let src = old.as_deref().unwrap_or(p);
                let full_src = safe_join(root, src)?;
                let text = read(&full_src, src)?;
                let new = apply_hunks(&text, hunks, fuzz, p)?;
                let full = safe_join(root, p)?;
                if src != p {
                    std::fs::remove_file(&full_src)
                        .map_err(|e| PatchError::Io(src.to_string(), e.to_string()))?;
                }
                write(&full, p, &new)
            }
            (None, None) => Ok(()),
        },
    }
}

/// Replaces the first occurrence of `search`: exactly, then ignoring trailing whitespace per
/// line, then ignoring indentation (re-indenting the replacement by the difference).
fn replace_once(text: &str, search: &str, replace: &str) -> Option<String> {
    if let Some(pos) = text.find(search) {
        return Some(format!(
            "{}{}{}",
            &text[..pos],
            replace,
            &text[pos + search.len()..]
        ));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let want: Vec<&str> = search.lines().collect();
    if want.is_empty() {
        return None;
    }
    let repl: Vec<&str> = replace.lines().collect();
    let indent = |s: &str| s.len() - s.trim_start().len();
    for strip_indent in [false, true] {
        for start in 0..lines.len() {
            if start + want.len() > lines.len() {
                break;
            }
            let ok = want.iter().enumerate().all(|(k, w)| {
                let have = lines[start + k].trim_end();
                if strip_indent {
                    have.trim_start() == w.trim()
                } else {
                    have == w.trim_end()
                }
            });
            if !ok {
                continue;
            }
            let mut out: String = lines[..start].concat();
            // Shift the replacement by the indentation difference of the first non-blank line.
            let first = want.iter().position(|w| !w.trim().is_empty()).unwrap_or(0);
            let delta = indent(lines[start + first]) as isize - indent(want[first]) as isize;
            for r in &repl {
                if strip_indent && !r.trim().is_empty() {
                    let cur = indent(r) as isize;
                    let n = (cur + delta).max(0) as usize;
                    out.push_str(&" ".repeat(n));
                    out.push_str(r.trim_start());
                } else {
                    out.push_str(r);
                }
                out.push('\n');
            }
            out.push_str(&lines[start + want.len()..].concat());
            return Some(out);
        }
    }
    None
}

fn apply_hunks(text: &str, hunks: &[Hunk], fuzz: usize, path: &str) -> Result<String, PatchError> {
    let had_newline = text.ends_with('\n') || text.is_empty();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut offset: isize = 0;
    for (hi, h) in hunks.iter().enumerate() {
        let mut applied = false;
        'fuzz: for f in 0..=fuzz {
            // Drop up to `f` leading and trailing context lines.
            let lead = h
                .lines
                .iter()
                .take_while(|l| matches!(l, HunkLine::Context(_)))
                .count()
                .min(f);
            let trail = h
                .lines
                .iter()
                .rev()
                .take_while(|l| matches!(l, HunkLine::Context(_)))
                .count()
                .min(f);
            if lead + trail >= h.lines.len() {
                continue;
            }
            let body = &h.lines[lead..h.lines.len() - trail];
            let old: Vec<&str> = body
                .iter()
                .filter_map(|l| match l {
                    HunkLine::Context(s) | HunkLine::Remove(s) => Some(s.as_str()),
                    HunkLine::Add(_) => None,
                })
                .collect();
            let new: Vec<String> = body
                .iter()
                .filter_map(|l| match l {
                    HunkLine::Context(s) | HunkLine::Add(s) => Some(s.clone()),
                    HunkLine::Remove(_) => None,
                })
                .collect();
            let hint = (h.old_start as isize - 1 + lead as isize + offset).max(0) as usize;
            for loose in [false, true] {
                if let Some(at) = find_block(&lines, &old, hint, loose) {
                    lines.splice(at..at + old.len(), new.iter().cloned());
                    offset += new.len() as isize - old.len() as isize;
                    applied = true;
                    break 'fuzz;
                }
            }
        }
        if !applied {
            return Err(PatchError::Hunk {
                path: path.to_string(),
                hunk: hi + 1,
            });
        }
    }
    let mut out = lines.join("\n");
    if had_newline && !lines.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

/// Finds `block` in `lines`, searching outward from `hint`; `loose` ignores trailing whitespace.
fn find_block(lines: &[String], block: &[&str], hint: usize, loose: bool) -> Option<usize> {
    if block.is_empty() {
        return Some(hint.min(lines.len()));
    }
    if block.len() > lines.len() {
        return None;
    }
    let last = lines.len() - block.len();
    let matches = |at: usize| {
        block.iter().enumerate().all(|(k, b)| {
            if loose {
                lines[at + k].trim_end() == b.trim_end()
            } else {
                lines[at + k] == *b
            }
        })
    };
    let hint = hint.min(last);
    for d in 0..=last {
        if hint + d <= last && matches(hint + d) {
            return Some(hint + d);
        }
        if d > 0 && d <= hint && matches(hint - d) {
            return Some(hint - d);
        }
        if hint + d > last && d > hint {
            break;
        }
    }
    None
}

/// A git-style unified diff of one file, with 3 lines of context; empty if nothing changed.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(old, new);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    format!("diff --git a/{path} b/{path}\n{body}")
}

/// Reverses a unified diff (what fixes a bug from the diff that made it).
pub fn reverse_diff(diff: &str) -> String {
    let swap_prefix = |p: &str| -> String {
        if let Some(r) = p.strip_prefix("a/") {
            format!("b/{r}")
        } else if let Some(r) = p.strip_prefix("b/") {
            format!("a/{r}")
        } else {
            p.to_string()
        }
    };
    let lines: Vec<&str> = diff.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
            out.push_str(&format!(
                "--- {}\n+++ {}\n",
                swap_prefix(&lines[i + 1][4..]),
                swap_prefix(&line[4..])
            ));
            i += 2;
            continue;
        }
        let rev = if let Some(rest) = line.strip_prefix("diff --git ") {
            let mut parts = rest.splitn(2, ' ');
            let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            format!("diff --git {} {}", swap_prefix(b), swap_prefix(a))
        } else if let Some(rest) = line.strip_prefix("@@") {
            let end = rest.find("@@").unwrap_or(rest.len());
            let mut it = rest[..end].split_whitespace();
            match (it.next(), it.next()) {
                (Some(o), Some(n)) if o.starts_with('-') && n.starts_with('+') => {
                    format!(
                        "@@ -{} +{} @@{}",
                        &n[1..],
                        &o[1..],
                        rest.get(end + 2..).unwrap_or("")
                    )
                }
                _ => line.to_string(),
            }
        } else if let Some(rest) = line.strip_prefix('+') {
            format!("-{rest}")
        } else if let Some(rest) = line.strip_prefix('-') {
            format!("+{rest}")
        } else {
            line.to_string()
        };
        out.push_str(&rev);
        out.push('\n');
        i += 1;
    }
    out
}
