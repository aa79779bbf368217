//! Corpus synthesis end to end on a small package written here: mutants that break some tests
//! and not others, one instance per skill each, every gold answer scoring 1, deterministic.

mod skills_support;

use atomrl::skills::{gold_completion, GraderConfig, Skill, Task};
use atomrl::synth::mutate::mutations_in;
use atomrl::synth::{synth_package, PackageSpec, SynthConfig};
use std::collections::BTreeSet;

const LIB: &str = r#"
def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def window(seq, n):
    return [seq[i:i + n] for i in range(len(seq) - n + 1)]


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n
"#;

const OTHER: &str = "def double(x):\n    return x * 2\n";

const TESTS: &str = r#"
import unittest

from mini.core import clamp, window, Counter


def test_clamp_low():
    assert clamp(-5, 0, 10) == 0


def test_clamp_high():
    assert clamp(50, 0, 10) == 10


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_clamp_edges():
    assert clamp(0, 0, 10) == 0
    assert clamp(10, 0, 10) == 10


def test_window():
    assert window([1, 2, 3, 4], 2) == [[1, 2], [2, 3], [3, 4]]


def test_window_whole():
    assert window([1, 2], 2) == [[1, 2]]


class TestCounter(unittest.TestCase):
    start = 0

    def setUp(self):
        self.c = Counter()

    def test_add_one(self):
        self.assertEqual(self.c.add(), self.start + 1)

    def test_add_two(self):
        self.assertEqual(self.c.add(2), 2)

    def test_unrelated(self):
        self.assertEqual(1 + 1, 2)
"#;

fn package() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("mini")).unwrap();
    std::fs::create_dir_all(d.path().join("tests")).unwrap();
    std::fs::write(d.path().join("mini/__init__.py"), "").unwrap();
    std::fs::write(d.path().join("mini/core.py"), LIB).unwrap();
    std::fs::write(d.path().join("mini/other.py"), OTHER).unwrap();
    std::fs::write(d.path().join("tests/__init__.py"), "").unwrap();
    std::fs::write(d.path().join("tests/test_core.py"), TESTS).unwrap();
    d
}

#[test]
fn mutations_touch_only_the_mutated_text() {
    let muts: Vec<_> = atomrl::skills::pysrc::functions(LIB)
        .iter()
        .flat_map(|f| mutations_in(LIB, f.body_start_byte, f.end_byte))
        .collect();
    let ops: BTreeSet<&str> = muts.iter().map(|m| m.op).collect();
    for op in [
        "compare",
        "invert",
        "off_by_one",
        "arith",
        "remove_branch",
        "constant",
    ] {
        assert!(ops.contains(op), "{op} missing from {ops:?}");
    }
    for m in &muts {
        let mutated = m.apply(LIB);
        assert_eq!(&mutated[..m.start], &LIB[..m.start]);
        assert_eq!(&mutated[m.start + m.replacement.len()..], &LIB[m.end..]);
        assert!(atomrl::skills::pysrc::syntax_ok(&mutated), "{m:?}");
    }
}

#[test]
fn synth_builds_graded_instances_deterministically() {
    let pkg = package();
    let cfg = GraderConfig::default();
    let probe = Task::default();
    let Some(grader) = skills_support::grader_for("synth", &[probe], cfg) else {
        return;
    };
    let spec = PackageSpec {
        name: "mini".into(),
        version: "0.1".into(),
        file: String::new(),
        sha256: String::new(),
        split: "train".into(),
        package_dir: "mini".into(),
        pythonpath: vec![],
        exclude: vec![],
        local_dir: Some(pkg.path().display().to_string()),
    };
    let scfg = SynthConfig {
        max_mutants: 4,
        max_candidates: 30,
        ..SynthConfig::default()
    };
    let tasks = synth_package(&grader, &spec, &scfg, &|l| eprintln!("{l}")).unwrap();
    assert!(tasks.len() >= 10, "{} instances", tasks.len());
    for skill in Skill::ALL {
        assert!(tasks.iter().any(|t| t.skill == skill), "{skill}");
    }
    for t in &tasks {
        assert!(
            !t.FAIL_TO_PASS.is_empty() && !t.PASS_TO_PASS.is_empty(),
            "{}",
            t.instance_id
        );
        assert!(
            t.gold_locations[0].starts_with("mini/core.py:"),
            "{:?}",
            t.gold_locations
        );
        assert!(t.FAIL_TO_PASS.iter().all(|f| !t.PASS_TO_PASS.contains(f)));
    }
    // The failing tests' own source is the gold test (no bare imports), and for a unittest
    // class only its failing methods are kept.
    for t in tasks.iter().filter(|t| t.skill == Skill::Testgen) {
        let g = t.gold_test.as_deref().unwrap();
        assert!(g.contains("def test_"), "{g}");
        if g.contains("class TestCounter") {
            assert!(g.contains("def setUp") && !g.contains("test_unrelated"), "{g}");
        }
    }
    for t in tasks.iter().filter(|t| t.skill == Skill::Reproduce) {
        assert!(t.gold_script.is_some(), "{}", t.instance_id);
    }
    let golds: Vec<String> = tasks.iter().map(gold_completion).collect();
    let items: Vec<(&Task, &str)> = tasks
        .iter()
        .zip(&golds)
        .map(|(t, g)| (t, g.as_str()))
        .collect();
    assert!(grader.grade_batch(&items).iter().all(|g| g.reward == 1.0));
    let again = synth_package(&grader, &spec, &scfg, &|_| {}).unwrap();
    assert_eq!(tasks, again, "synthesis is deterministic");
}
