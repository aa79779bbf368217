//! Python source through tree-sitter: functions with their qualified names and spans, file
//! skeletons for repository views, and syntax checks.

use tree_sitter::{Node, Parser, Tree};

pub fn parse(src: &str) -> Option<Tree> {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .ok()?;
    parser.parse(src, None)
}

/// True if the source parses without syntax errors.
pub fn syntax_ok(src: &str) -> bool {
    parse(src).is_some_and(|t| !t.root_node().has_error())
}

/// A function or method definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// `name`, `Class.method`; a function nested in a function is named after the outer one
    /// with `.<locals>.` as Python's `__qualname__` does.
    pub qualname: String,
    pub name: String,
    /// 1-based lines of the whole definition, decorators included.
    pub start_line: usize,
    pub end_line: usize,
    /// 1-based line of the `def` keyword.
    pub def_line: usize,
    pub start_byte: usize,
    pub end_byte: usize,
    /// The body block.
    pub body_start_byte: usize,
    /// Defined directly in a module or class (not nested in a function).
    pub top_level: bool,
}

/// All function definitions, outermost first.
pub fn functions(src: &str) -> Vec<Function> {
    let Some(tree) = parse(src) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(tree.root_node(), src, &mut Vec::new(), false, &mut out);
    out
}

fn walk(
    node: Node,
    src: &str,
    scope: &mut Vec<String>,
    in_function: bool,
    out: &mut Vec<Function>,
) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let (def, outer) = if child.kind() == "decorated_definition" {
            match child.child_by_field_name("definition") {
                Some(d) => (d, child),
                None => continue,
            }
        } else {
            (child, child)
        };
        match def.kind() {
            "function_definition" => {
                let name = def
                    .child_by_field_name("name")
                    .map(|n| src[n.byte_range()].to_string())
                    .unwrap_or_default();
                let mut parts = scope.clone();
                parts.push(name.clone());
                let qualname = parts.join(".");
                let body = def.child_by_field_name("body");
                out.push(Function {
                    qualname,
                    name: name.clone(),
                    start_line: outer.start_position().row + 1,
                    end_line: outer.end_position().row + 1,
                    def_line: def.start_position().row + 1,
                    start_byte: outer.start_byte(),
                    end_byte: outer.end_byte(),
                    body_start_byte: body.map_or(def.end_byte(), |b| b.start_byte()),
                    top_level: !in_function,
                });
                if let Some(body) = body {
                    scope.push(name);
                    scope.push("<locals>".into());
                    walk(body, src, scope, true, out);
                    scope.pop();
                    scope.pop();
                }
            }
            "class_definition" => {
                let name = def
                    .child_by_field_name("name")
                    .map(|n| src[n.byte_range()].to_string())
                    .unwrap_or_default();
                if let Some(body) = def.child_by_field_name("body") {
                    scope.push(name);
                    walk(body, src, scope, in_function, out);
                    scope.pop();
                }
            }
            _ => {
                // Definitions inside if/try/with blocks at module or class level.
                if matches!(
                    def.kind(),
                    "if_statement"
                        | "try_statement"
                        | "with_statement"
                        | "else_clause"
                        | "elif_clause"
                        | "except_clause"
                        | "finally_clause"
                        | "block"
                ) {
                    walk(def, src, scope, in_function, out);
                }
            }
        }
    }
}

/// The function to name for a location at `line`: the outermost function that is not nested in
/// another function (a method counts as `Class.method`).
pub fn location_at_line(funcs: &[Function], line: usize) -> Option<&Function> {
    funcs
        .iter()
        .filter(|f| f.top_level && f.start_line <= line && line <= f.end_line)
        .min_by_key(|f| f.end_line - f.start_line)
}

/// Class and function signatures of a file, one per line, indented as in the source; bodies
/// are left out. Long signatures are cut.
pub fn skeleton(src: &str) -> String {
    let Some(tree) = parse(src) else {
        return String::new();
    };
    let mut out = String::new();
    skel(tree.root_node(), src, 0, &mut out);
    out
}

fn skel(node: Node, src: &str, depth: usize, out: &mut String) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let def = if child.kind() == "decorated_definition" {
            match child.child_by_field_name("definition") {
                Some(d) => d,
                None => continue,
            }
        } else {
            child
        };
        if def.kind() != "function_definition" && def.kind() != "class_definition" {
            continue;
        }
        let body = def.child_by_field_name("body");
        let header_end = body.map_or(def.end_byte(), |b| b.start_byte());
        let header: String = src[def.start_byte()..header_end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut header = header.trim_end().to_string();
        if header.len() > 100 {
            let cut = (0..=100)
                .rev()
                .find(|&i| header.is_char_boundary(i))
                .unwrap_or(0);
            header.truncate(cut);
            header.push_str("...");
        }
        out.push_str(&"    ".repeat(depth));
        out.push_str(&header);
        out.push('\n');
        if def.kind() == "class_definition" {
            if let Some(b) = body {
                skel(b, src, depth + 1, out);
            }
        }
    }
}

/// The text of lines `start..=end` (1-based).
pub fn lines(src: &str, start: usize, end: usize) -> String {
    src.lines()
        .skip(start.saturating_sub(1))
        .take(end + 1 - start.max(1))
        .map(|l| format!("{l}\n"))
        .collect()
}
