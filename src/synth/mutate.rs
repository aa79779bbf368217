//! Mutation operators over Python source, located with tree-sitter so that a mutant differs from
//! the original only in the mutated text.

use crate::skills::pysrc;
use tree_sitter::Node;

/// One mutation: replace `src[start..end]` with `replacement`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub start: usize,
    pub end: usize,
    pub replacement: String,
    /// The operator's name (`compare`, `off_by_one`, `remove_branch`, ...).
    pub op: &'static str,
    /// Other replacements of the same text, used for wrong review candidates.
    pub siblings: Vec<String>,
}

impl Mutation {
    pub fn apply(&self, src: &str) -> String {
        format!(
            "{}{}{}",
            &src[..self.start],
            self.replacement,
            &src[self.end..]
        )
    }

    /// 1-based line of the mutation's start.
    pub fn line(&self, src: &str) -> usize {
        src[..self.start].matches('\n').count() + 1
    }

    /// Lines the original text spans.
    pub fn line_span(&self, src: &str) -> usize {
        src[self.start..self.end].matches('\n').count() + 1
    }
}

fn compare_alternatives(op: &str) -> &'static [&'static str] {
    match op {
        "<" => &["<=", ">"],
        "<=" => &["<", ">="],
        ">" => &[">=", "<"],
        ">=" => &[">", "<="],
        "==" => &["!=", "is"],
        "!=" => &["==", "is not"],
        "in" => &["not in"],
        "not in" => &["in"],
        "is" => &["is not"],
        "is not" => &["is"],
        _ => &[],
    }
}

fn binary_alternatives(op: &str) -> &'static [&'static str] {
    match op {
        "+" => &["-", "*"],
        "-" => &["+"],
        "//" => &["/", "%"],
        "%" => &["//"],
        "<<" => &[">>"],
        ">>" => &["<<"],
        "&" => &["|"],
        "|" => &["&"],
        "^" => &["|"],
        _ => &[],
    }
}

/// Every mutation inside the byte range [lo, hi) (a function body), with nested function
/// definitions excluded (they are functions of their own).
pub fn mutations_in(src: &str, lo: usize, hi: usize) -> Vec<Mutation> {
    let Some(tree) = pysrc::parse(src) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    visit(tree.root_node(), src, lo, hi, &mut out);
    out.retain(|m| {
        let mutated = m.apply(src);
        mutated != src && pysrc::syntax_ok(&mutated)
    });
    out
}

fn visit(node: Node, src: &str, lo: usize, hi: usize, out: &mut Vec<Mutation>) {
    if node.end_byte() <= lo || node.start_byte() >= hi {
        return;
    }
    let inside = node.start_byte() >= lo && node.end_byte() <= hi;
    if inside {
        if matches!(
            node.kind(),
            "function_definition" | "decorated_definition" | "class_definition" | "lambda"
        ) {
            return;
        }
        mutate_node(node, src, out);
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        visit(child, src, lo, hi, out);
    }
}

fn text<'a>(node: Node, src: &'a str) -> &'a str {
    &src[node.byte_range()]
}

fn push(out: &mut Vec<Mutation>, node: Node, op: &'static str, alts: Vec<String>) {
    if let Some((first, rest)) = alts.split_first() {
        out.push(Mutation {
            start: node.start_byte(),
            end: node.end_byte(),
            replacement: first.clone(),
            op,
            siblings: rest.to_vec(),
        });
    }
}

fn mutate_node(node: Node, src: &str, out: &mut Vec<Mutation>) {
    match node.kind() {
        "comparison_operator" => {
            // Operators are the unnamed children between operands.
            let mut cursor = node.walk();
            for child in node.children(&mut cursor) {
                if !child.is_named() {
                    let alts = compare_alternatives(text(child, src));
                    push(
                        out,
                        child,
                        "compare",
                        alts.iter().map(|s| s.to_string()).collect(),
                    );
                }
            }
        }
        "binary_operator" => {
            if let Some(op) = node.child_by_field_name("operator") {
                let alts = binary_alternatives(text(op, src));
                push(
                    out,
                    op,
                    "arith",
                    alts.iter().map(|s| s.to_string()).collect(),
                );
            }
        }
        "boolean_operator" => {
            if let Some(op) = node.child_by_field_name("operator") {
                let alt = if text(op, src) == "and" { "or" } else { "and" };
                push(out, op, "bool_op", vec![alt.into()]);
            }
        }
        "augmented_assignment" => {
            if let Some(op) = node.child_by_field_name("operator") {
                let alt = match text(op, src) {
                    "+=" => "-=",
                    "-=" => "+=",
                    _ => return,
                };
                push(out, op, "arith", vec![alt.into()]);
            }
        }
        "not_operator" => {
            if let Some(arg) = node.child_by_field_name("argument") {
                push(out, node, "invert", vec![text(arg, src).to_string()]);
            }
        }
        "if_statement" | "elif_clause" | "while_statement" => {
            if let Some(cond) = node.child_by_field_name("condition") {
                if cond.kind() != "not_operator" && !text(cond, src).contains('\n') {
                    let c = text(cond, src);
                    let simple = matches!(
                        cond.kind(),
                        "identifier"
                            | "call"
                            | "attribute"
                            | "subscript"
                            | "parenthesized_expression"
                            | "true"
                            | "false"
                            | "none"
                    );
                    let inv = if simple {
                        format!("not {c}")
                    } else {
                        format!("not ({c})")
                    };
                    push(out, cond, "invert", vec![inv]);
                }
            }
            if node.kind() == "if_statement" {
                remove_branch(node, src, out);
            }
        }
        "else_clause" if node.parent().is_some_and(|p| p.kind() == "if_statement") => {
            if let Some(range) = whole_lines(node, src, 4) {
                out.push(Mutation {
                    start: range.0,
                    end: range.1,
                    replacement: String::new(),
                    op: "remove_branch",
                    siblings: vec![],
                });
            }
        }
        "integer" => {
            let t = text(node, src);
            let Ok(n) = t.parse::<i64>() else { return };
            if n > 1000 || in_default_or_decorator(node) {
                return;
            }
            let in_slice = node
                .parent()
                .is_some_and(|p| matches!(p.kind(), "slice" | "subscript" | "unary_operator"));
            let op = if in_slice
                || node
                    .parent()
                    .is_some_and(|p| p.kind() == "comparison_operator")
            {
                "off_by_one"
            } else {
                "constant"
            };
            let mut alts = vec![(n + 1).to_string()];
            if n > 0 {
                alts.insert(0, (n - 1).to_string());
            }
            push(out, node, op, alts);
        }
        "true" => push(out, node, "constant", vec!["False".into()]),
        "false" => push(out, node, "constant", vec!["True".into()]),
        "slice" => {
            // seq[:n] → seq[:n + 1], seq[i:] → seq[i + 1:]
            let mut cursor = node.walk();
            for child in node.named_children(&mut cursor) {
                if matches!(child.kind(), "identifier" | "attribute" | "call") {
                    let t = text(child, src);
                    push(
                        out,
                        child,
                        "off_by_one",
                        vec![format!("{t} + 1"), format!("{t} - 1")],
                    );
                }
            }
        }
        "call" => {
            let Some(args) = node.child_by_field_name("arguments") else {
                return;
            };
            if args.kind() != "argument_list" {
                return;
            }
            let mut cursor = args.walk();
            let named: Vec<Node> = args.named_children(&mut cursor).collect();
            if named.len() == 2
                && named.iter().all(|a| {
                    !matches!(
                        a.kind(),
                        "keyword_argument" | "list_splat" | "dictionary_splat" | "comment"
                    )
                })
            {
                let (a, b) = (text(named[0], src), text(named[1], src));
                if a != b && !a.contains('\n') && !b.contains('\n') {
                    let between = &src[named[0].end_byte()..named[1].start_byte()];
                    out.push(Mutation {
                        start: named[0].start_byte(),
                        end: named[1].end_byte(),
                        replacement: format!("{b}{between}{a}"),
                        op: "swap_args",
                        siblings: vec![],
                    });
                }
            }
        }
        _ => {}
    }
}

fn in_default_or_decorator(node: Node) -> bool {
    let mut cur = node.parent();
    while let Some(p) = cur {
        match p.kind() {
            "default_parameter" | "typed_default_parameter" | "decorator" => return true,
            "block" => return false,
            _ => cur = p.parent(),
        }
    }
    false
}

/// `if cond: <short body>` with no else, not alone in its block: delete it.
fn remove_branch(node: Node, src: &str, out: &mut Vec<Mutation>) {
    if node.child_by_field_name("alternative").is_some() {
        return;
    }
    let alone = node.parent().is_some_and(|p| p.named_child_count() <= 1);
    if alone {
        return;
    }
    if let Some((s, e)) = whole_lines(node, src, 4) {
        out.push(Mutation {
            start: s,
            end: e,
            replacement: String::new(),
            op: "remove_branch",
            siblings: vec![],
        });
    }
}

/// The byte range of the whole lines a node spans (up to `max_lines`), if nothing else shares them.
fn whole_lines(node: Node, src: &str, max_lines: usize) -> Option<(usize, usize)> {
    let start = src[..node.start_byte()].rfind('\n').map_or(0, |i| i + 1);
    if !src[start..node.start_byte()].trim().is_empty() {
        return None;
    }
    let end = src[node.end_byte()..]
        .find('\n')
        .map_or(src.len(), |i| node.end_byte() + i + 1);
    if !src[node.end_byte()..end].trim().is_empty() {
        return None;
    }
    let lines = src[start..end].matches('\n').count().max(1);
    (lines <= max_lines).then_some((start, end))
}
