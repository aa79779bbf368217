//! Answer parsing (forgiving about formatting, strict about content) and patch application.

use atomrl::skills::patch::{
    apply_edits, parse_search_replace, parse_unified_diff, reverse_diff, unified_diff,
};
use atomrl::skills::{localize, parse, review, Task, Verdict};

const SRC: &str = "def f(x):\n    a = 1\n    b = 2\n    if x < 3:\n        return a\n    return b\n\n\ndef g():\n    return 0\n";

fn tree(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("pkg")).unwrap();
    std::fs::write(d.path().join("pkg/m.py"), text).unwrap();
    d
}

#[test]
fn unified_diffs_apply_with_offset_and_fuzz() {
    let new = SRC.replace("x < 3", "x <= 3");
    let diff = unified_diff("pkg/m.py", SRC, &new);
    // Two lines added at the top: the hunk applies at an offset.
    let shifted = format!("import os\nimport sys\n{SRC}");
    let d = tree(&shifted);
    apply_edits(d.path(), &parse_unified_diff(&diff), 0).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.path().join("pkg/m.py")).unwrap(),
        format!("import os\nimport sys\n{new}")
    );
    // A context line that no longer matches needs fuzz.
    let drifted = SRC.replace("    a = 1", "    a = 10");
    let d = tree(&drifted);
    assert!(apply_edits(d.path(), &parse_unified_diff(&diff), 0).is_err());
    apply_edits(d.path(), &parse_unified_diff(&diff), 2).unwrap();
    assert!(std::fs::read_to_string(d.path().join("pkg/m.py"))
        .unwrap()
        .contains("x <= 3"));
    // Reversing undoes.
    let d = tree(&new);
    apply_edits(d.path(), &parse_unified_diff(&reverse_diff(&diff)), 0).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.path().join("pkg/m.py")).unwrap(),
        SRC
    );
}

#[test]
fn diffs_from_models_with_wrong_counts_and_lost_spaces_still_apply() {
    let diff = "```diff\n--- a/pkg/m.py\n+++ b/pkg/m.py\n@@ -3,4 +3,4 @@\n     b = 2\n-    if x < 3:\n+    if x <= 3:\n         return a\n```\n";
    let d = tree(SRC);
    apply_edits(d.path(), &parse_unified_diff(diff), 2).unwrap();
    assert!(std::fs::read_to_string(d.path().join("pkg/m.py"))
        .unwrap()
        .contains("x <= 3"));
}

#[test]
fn search_replace_blocks_are_found_in_prose_and_fences() {
    let answer = "Sure! Here is the fix:\n\n```python\n### pkg/m.py\n<<<<<<< SEARCH\n    if x < 3:\n=======\n    if x <= 3:\n>>>>>>> REPLACE\n```\nThis fixes it.";
    let edits = parse_search_replace(answer, None).unwrap();
    let d = tree(SRC);
    apply_edits(d.path(), &edits, 0).unwrap();
    assert!(std::fs::read_to_string(d.path().join("pkg/m.py"))
        .unwrap()
        .contains("x <= 3"));
    // Indentation lost by the model is restored.
    let flat = "pkg/m.py\n<<<<<<< SEARCH\nif x < 3:\n    return a\n=======\nif x <= 3:\n    return b\n>>>>>>> REPLACE\n";
    let d = tree(SRC);
    apply_edits(d.path(), &parse_search_replace(flat, None).unwrap(), 0).unwrap();
    assert!(std::fs::read_to_string(d.path().join("pkg/m.py"))
        .unwrap()
        .contains("    if x <= 3:\n        return b\n"));
}

#[test]
fn paths_cannot_leave_the_tree() {
    let d = tree(SRC);
    for bad in ["../escape.py", "/etc/passwd", "pkg/../../x.py"] {
        let e = format!("{bad}\n<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE\n");
        assert!(
            apply_edits(d.path(), &parse_search_replace(&e, None).unwrap(), 0).is_err(),
            "{bad}"
        );
    }
    std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
    let e = "link/hosts\n<<<<<<< SEARCH\n=======\nx\n>>>>>>> REPLACE\n";
    assert!(apply_edits(d.path(), &parse_search_replace(e, None).unwrap(), 0).is_err());
}

#[test]
fn python_code_is_taken_from_the_last_python_block_or_bare_code() {
    assert_eq!(
        parse::python_code("Here:\n```python\nx = 1\n```\nand\n```python\ny = 2\n```").unwrap(),
        "y = 2\n"
    );
    assert_eq!(
        parse::python_code("import os\nprint(os.sep)").unwrap(),
        "import os\nprint(os.sep)\n"
    );
    assert!(parse::python_code("I think the bug is in the loop.").is_none());
    assert!(parse::python_code("").is_none());
}

#[test]
fn localize_answers_tolerate_markdown() {
    let (files, funcs) =
        localize::parse_answer("The bug is here:\n1. `pkg/m.py:f`\n- pkg/other.py\n").unwrap();
    assert_eq!(files, vec!["pkg/m.py", "pkg/other.py"]);
    assert_eq!(funcs, vec!["pkg/m.py:f"]);
    assert!(localize::parse_answer("somewhere in the package").is_none());
    let t = Task {
        gold_locations: vec!["pkg/m.py:f".into()],
        ..Task::default()
    };
    let g = localize::grade(&t, "pkg/m.py:g\npkg/other.py");
    assert_eq!(g.reward, 0.0);
    assert_eq!(g.metrics["acc@1"], 1.0);
    assert!((g.metrics["file_f1"] - 2.0 / 3.0).abs() < 1e-6);
    assert_eq!(localize::grade(&t, "```\npkg/m.py\n```").reward, 1.0);
}

#[test]
fn review_verdicts_are_strict_about_content() {
    assert_eq!(
        review::parse_answer("The patch looks fine.\n**VERDICT:** correct"),
        Some(Verdict::Correct)
    );
    assert_eq!(
        review::parse_answer("Verdict = incorrect."),
        Some(Verdict::Incorrect)
    );
    assert_eq!(review::parse_answer("incorrect"), Some(Verdict::Incorrect));
    assert_eq!(
        review::parse_answer("it is correct or maybe incorrect"),
        None
    );
    assert_eq!(review::parse_answer(""), None);
}
