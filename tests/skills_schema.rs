//! Task loading: SWE-bench rows load unchanged, malformed lines are reported by number.

use atomrl::skills::{load_tasks, parse_tasks, BadLine, Skill};

const SWE_BENCH_ROW: &str = r#"{"repo": "astropy/astropy", "instance_id": "astropy__astropy-12907", "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607", "patch": "diff --git a/astropy/modeling/separable.py b/astropy/modeling/separable.py\n--- a/astropy/modeling/separable.py\n+++ b/astropy/modeling/separable.py\n@@ -242,7 +242,7 @@ def _cstack(left, right):\n         cright = _coord_matrix(right, 'right', noutp)\n     else:\n         cright = np.zeros((noutp, right.shape[1]))\n-        cright[-right.shape[0]:, -right.shape[1]:] = 1\n+        cright[-right.shape[0]:, -right.shape[1]:] = right\n \n     return np.hstack([cleft, cright])\n \n", "test_patch": "diff --git a/astropy/modeling/tests/test_separable.py b/astropy/modeling/tests/test_separable.py\n--- a/astropy/modeling/tests/test_separable.py\n+++ b/astropy/modeling/tests/test_separable.py\n@@ -1,1 +1,2 @@\n x\n+y\n", "problem_statement": "Modeling's `separability_matrix` does not compute separability correctly for nested CompoundModels", "hints_text": "", "created_at": "2022-03-03T15:14:54Z", "version": "4.3", "FAIL_TO_PASS": "[\"astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]\"]", "PASS_TO_PASS": "[\"astropy/modeling/tests/test_separable.py::test_coord_matrix\"]", "environment_setup_commit": "298ccb478e6bf092953bca67a3d29dc6c35f6752"}"#;

#[test]
fn a_swe_bench_row_loads_unchanged() {
    let env = r#","env":{"source":{"kind":"dir","path":"/tmp/astropy"}}}"#;
    let row = format!("{}{}", &SWE_BENCH_ROW[..SWE_BENCH_ROW.len() - 1], env);
    let (tasks, errors) = parse_tasks(&row);
    assert!(errors.is_empty(), "{errors:?}");
    let t = &tasks[0];
    assert_eq!(t.skill, Skill::Edit);
    assert_eq!(
        t.FAIL_TO_PASS,
        vec!["astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]"]
    );
    assert_eq!(t.PASS_TO_PASS.len(), 1);
    assert_eq!(t.version.as_deref(), Some("4.3"));
    assert_eq!(
        t.gold_locations,
        vec!["astropy/modeling/separable.py"],
        "derived from the patch"
    );
    assert!(
        t.extra.contains_key("environment_setup_commit"),
        "unknown fields are kept"
    );
    let back = serde_json::to_string(t).unwrap();
    assert!(back.contains("environment_setup_commit"));
}

#[test]
fn lists_are_accepted_as_lists_or_json_strings_and_versions_as_numbers() {
    let row = r#"{"instance_id":"x","skill":"localize","patch":"","FAIL_TO_PASS":["a::b"],"PASS_TO_PASS":"[]","version":0.12,"gold_locations":["m.py:f"]}"#;
    let (tasks, errors) = parse_tasks(row);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tasks[0].FAIL_TO_PASS, vec!["a::b"]);
    assert_eq!(tasks[0].version.as_deref(), Some("0.12"));
    assert_eq!(tasks[0].gold_files(), vec!["m.py"]);
    assert_eq!(tasks[0].gold_functions(), vec!["m.py:f"]);
}

#[test]
fn malformed_lines_are_reported_by_number_and_skipped_or_refused() {
    let good = r#"{"instance_id":"ok","skill":"review","review":{"candidate_patch":"","label":"correct"}}"#;
    let text = format!(
        "{good}\n\n{{not json\n{}\n{}\n{good}\n",
        r#"{"instance_id":"r","skill":"review"}"#, r#"{"instance_id":"s","skill":"telepathy"}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    std::fs::write(&path, &text).unwrap();
    let (tasks, errors) = load_tasks(&path, BadLine::Skip).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(
        errors[1].message.contains("review task without review"),
        "{:?}",
        errors[1]
    );
    let err = load_tasks(&path, BadLine::Refuse).unwrap_err().to_string();
    assert!(
        err.contains("3 malformed") && err.contains("line 3") && err.contains("line 5"),
        "{err}"
    );
}

#[test]
fn gold_functions_are_derived_from_the_patch_hunks_with_the_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
    let old = "import os\n\n\nclass A:\n    def m(self):\n        return 1\n\n\ndef f(x):\n    y = x\n    return y\n";
    let new = old.replace("return 1", "return 2").replace("return y", "return y + 1");
    std::fs::write(dir.path().join("pkg/mod.py"), old).unwrap();
    let patch = atomrl::skills::patch::unified_diff("pkg/mod.py", old, &new);
    let row = serde_json::json!({
        "instance_id": "d", "patch": patch, "FAIL_TO_PASS": ["t.py::t"],
        "env": {"source": {"kind": "dir", "path": dir.path()}},
    });
    let (mut tasks, errors) = parse_tasks(&row.to_string());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tasks[0].gold_locations, vec!["pkg/mod.py"]);
    let grader = match atomrl::skills::Grader::new(Default::default()) {
        Ok(g) => g,
        Err(e) => return eprintln!("SKIPPED gold_functions: the sandbox cannot run here: {e:#}"),
    };
    grader.derive_gold_functions(&mut tasks[0]).unwrap();
    assert_eq!(tasks[0].gold_locations, vec!["pkg/mod.py", "pkg/mod.py:A.m", "pkg/mod.py:f"]);
}
