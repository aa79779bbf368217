//! Text the synthesised tasks carry: issue statements written from failing tests, and the gold
//! test files and reproduction scripts extracted from the package's own tests.

use super::*;
use std::collections::BTreeSet;

pub(super) fn humanize_test(id: &str) -> String {
    let last = id.rsplit("::").next().unwrap_or(id);
    let name = last.split('[').next().unwrap_or(last);
    name.trim_start_matches("test_").replace('_', " ")
}

/// Replaces memory addresses, which change from run to run, by `x...`: `at 0x7f3a9c2e1d50` and
/// pytest's truncated `<obj...x7f3a9c2e1d50>` alike (an `x` followed by 8 or more hex digits).
pub(super) fn scrub_addresses(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'x' || b[i] == b'X' {
            let n = b[i + 1..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            if n >= 8 {
                out.push_str("x...");
                i += 1 + n;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

pub(super) fn clean_message(msg: &str) -> String {
    let m = scrub_addresses(&msg.replace("/workspace/", ""));
    let m: String = m
        .lines()
        .filter(|l| !l.contains("Use -v to get"))
        .take(8)
        .collect::<Vec<_>>()
        .join("\n");
    crate::skills::clip(m.trim(), 400)
}

pub(super) fn problem_statement(k: &Kept) -> String {
    let first = &k.fail_to_pass[0];
    let mut s = format!(
        "Wrong behaviour: {}\n\nThese tests fail:\n",
        humanize_test(first)
    );
    for id in k.fail_to_pass.iter().take(3) {
        let msg = clean_message(k.messages.get(id).map_or("", String::as_str));
        s.push_str(&format!("- {id}\n"));
        if !msg.is_empty() {
            s.push_str(&format!("  {}\n", msg.replace('\n', "\n  ")));
        }
    }
    if k.fail_to_pass.len() > 3 {
        s.push_str(&format!("- and {} more\n", k.fail_to_pass.len() - 3));
    }
    s.push_str("\nThey should pass: the code does not do what the tests expect.");
    s
}

/// A test file made of the failing tests themselves (functions, or their class with only the
/// failing test methods), with their module's imports and the module-level helpers they use;
/// None when a failing test cannot be found.
pub(super) fn extracted_test(tree: &Path, fail_to_pass: &[String]) -> Option<String> {
    // file → top-level name → the failing methods (empty for a function).
    let mut by_file: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for id in fail_to_pass {
        let parts: Vec<&str> = id.split("::").collect();
        match parts.as_slice() {
            [file, func] => {
                by_file.entry(file).or_default().entry(func.split('[').next()?).or_default();
            }
            [file, class, method] => {
                let m = method.split('[').next()?;
                by_file.entry(file).or_default().entry(class).or_default().insert(m);
            }
            _ => return None,
        }
    }
    let mut imports = String::new();
    let mut bodies = String::new();
    for (file, names) in by_file {
        let src = std::fs::read_to_string(tree.join(file)).ok()?;
        let parsed = pysrc::parse(&src)?;
        let root = parsed.root_node();
        let mut cursor = root.walk();
        for node in root.named_children(&mut cursor) {
            if matches!(node.kind(), "import_statement" | "import_from_statement" | "future_import_statement") {
                let line = &src[node.byte_range()];
                if !imports.contains(line) {
                    imports.push_str(line);
                    imports.push('\n');
                }
            }
        }
        // Top-level definitions by name (helpers a test may use), in source order.
        let mut defs: Vec<(String, String)> = Vec::new();
        let mut cursor = root.walk();
        for node in root.named_children(&mut cursor) {
            let def = if node.kind() == "decorated_definition" { node.child_by_field_name("definition") } else { Some(node) };
            let Some(def) = def else { continue };
            let name = match def.kind() {
                "function_definition" | "class_definition" => def.child_by_field_name("name"),
                "expression_statement" => def
                    .named_child(0)
                    .filter(|a| a.kind() == "assignment")
                    .and_then(|a| a.child_by_field_name("left"))
                    .filter(|l| l.kind() == "identifier"),
                _ => None,
            };
            let Some(n) = name else { continue };
            let name = src[n.byte_range()].to_string();
            let text = match names.get(name.as_str()) {
                Some(methods) if def.kind() == "class_definition" && !methods.is_empty() => {
                    filtered_class(&src, node, def, methods)?
                }
                _ => src[node.byte_range()].to_string(),
            };
            defs.push((name, text));
        }
        let mut wanted: BTreeSet<String> = names.keys().map(|n| n.to_string()).collect();
        let mut included: BTreeSet<usize> = BTreeSet::new();
        loop {
            let before = included.len();
            for (i, (name, text)) in defs.iter().enumerate() {
                if wanted.contains(name) && included.insert(i) {
                    identifiers(text, &mut wanted);
                }
            }
            if included.len() == before {
                break;
            }
        }
        if names.keys().any(|n| !defs.iter().any(|(d, _)| d == n)) {
            return None;
        }
        for i in included {
            bodies.push_str("\n\n");
            bodies.push_str(&defs[i].1);
            bodies.push('\n');
        }
    }
    Some(format!("{imports}{bodies}"))
}

/// A test class keeping everything but the test methods that are not among `keep`.
pub(super) fn filtered_class(src: &str, outer: tree_sitter::Node, class: tree_sitter::Node, keep: &BTreeSet<&str>) -> Option<String> {
    let body = class.child_by_field_name("body")?;
    let line_start = |b: usize| src[..b].rfind('\n').map_or(0, |i| i + 1);
    let header_end = src[..body.start_byte()].rfind(':')? + 1;
    let mut out = src[line_start(outer.start_byte())..header_end].to_string();
    let mut cursor = body.walk();
    let mut kept = 0;
    for child in body.named_children(&mut cursor) {
        let def = if child.kind() == "decorated_definition" { child.child_by_field_name("definition") } else { Some(child) };
        if let Some(d) = def.filter(|d| d.kind() == "function_definition") {
            let name = d.child_by_field_name("name").map_or("", |n| &src[n.byte_range()]);
            if name.starts_with("test") {
                if !keep.contains(name) {
                    continue;
                }
                kept += 1;
            }
        }
        out.push_str("\n\n");
        out.push_str(&src[line_start(child.start_byte())..child.end_byte()]);
    }
    (kept == keep.len()).then_some(out)
}

/// The extracted tests as a script that runs each failing test and exits 1 if any fails; None
/// when a test needs pytest (fixtures, parameters, marks).
pub(super) fn as_script(tests: &str, fail_to_pass: &[String]) -> Option<String> {
    let funcs = pysrc::functions(tests);
    let mut plain = Vec::new();
    let mut unittest: Vec<(String, String)> = Vec::new();
    for id in fail_to_pass {
        let parts: Vec<&str> = id.split("::").collect();
        let qual = parts[1..].join(".");
        if qual.contains('[') {
            return None;
        }
        let f = funcs.iter().find(|f| f.qualname == qual)?;
        let def = &tests[f.start_byte..f.body_start_byte];
        if def.contains('@') || !(def.contains(&format!("{}():", f.name)) || def.contains(&format!("{}(self):", f.name))) {
            return None;
        }
        match parts.as_slice() {
            [_, func] => plain.push(format!("    {func}()\n")),
            [_, class, method] => {
                let header = tests.find(&format!("class {class}"))?;
                let line = &tests[header..header + tests[header..].find('\n').unwrap_or(0)];
                if !line.contains("TestCase") {
                    return None;
                }
                unittest.push((class.to_string(), method.to_string()));
            }
            _ => return None,
        }
    }
    let mut main = String::from("\n\nif __name__ == \"__main__\":\n");
    for p in &plain {
        main.push_str(p);
    }
    if !unittest.is_empty() {
        main.push_str("    import sys\n    import unittest\n\n    suite = unittest.TestSuite()\n");
        for (c, m) in &unittest {
            main.push_str(&format!("    suite.addTest({c}({m:?}))\n"));
        }
        main.push_str("    result = unittest.TextTestRunner().run(suite)\n    sys.exit(0 if result.wasSuccessful() else 1)\n");
    }
    Some(format!("{tests}{main}"))
}

pub(super) fn identifiers(code: &str, out: &mut BTreeSet<String>) {
    fn walk(node: tree_sitter::Node, code: &str, out: &mut BTreeSet<String>) {
        if node.kind() == "identifier" {
            out.insert(code[node.byte_range()].to_string());
        }
        let mut c = node.walk();
        for child in node.children(&mut c) {
            walk(child, code, out);
        }
    }
    if let Some(t) = pysrc::parse(code) {
        walk(t.root_node(), code, out);
    }
}

/// A test file that collects the failing tests from their own module.
pub(super) fn gold_test(fail_to_pass: &[String]) -> String {
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in fail_to_pass {
        let mut parts = id.split("::");
        let (Some(file), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let module = file.trim_end_matches(".py").replace('/', ".");
        imports
            .entry(module)
            .or_default()
            .insert(name.split('[').next().unwrap_or(name).to_string());
    }
    let mut s =
        String::from("# The tests that expose the bug, collected again from their module.\n");
    for (module, names) in imports {
        let names: Vec<String> = names.into_iter().collect();
        s.push_str(&format!(
            "from {module} import {}  # noqa: F401\n",
            names.join(", ")
        ));
    }
    s
}
