//! Hostile completions are contained, score 0, and the grader keeps working after each.

mod skills_support;

use atomrl::sandbox::Limits;
use atomrl::skills::{gold_completion, Grader, GraderConfig, Skill, Task};
use skills_support::*;
use std::time::{Duration, Instant};

fn setup(test: &str) -> Option<(Grader, Vec<Task>)> {
    let tasks = corpus();
    let cfg = GraderConfig {
        limits: Some(Limits {
            time_s: 8.0,
            cpu_s: 8,
            memory_mb: 1024,
            procs: 32,
            ..Limits::default()
        }),
        ..GraderConfig::default()
    };
    let some: Vec<Task> = tasks
        .iter()
        .filter(|t| t.repo == first(&tasks, Skill::Edit).repo)
        .cloned()
        .collect();
    let g = grader_for(test, &some, cfg)?;
    Some((g, some))
}

fn script(code: &str) -> String {
    format!("```python\n{code}\n```\n")
}

/// Grades a hostile completion: reward 0, and the gold answer of the same task still scores 1.
fn contained(g: &Grader, task: &Task, completion: &str) -> atomrl::skills::Grade {
    let start = Instant::now();
    let grade = g.grade(task, completion);
    eprintln!(
        "{}: {} ({}) in {:.1}s",
        task.skill,
        grade.reason,
        grade.detail,
        start.elapsed().as_secs_f64()
    );
    assert_eq!(grade.reward, 0.0, "{grade:?}");
    assert!(!grade.is_infra_error(), "{grade:?}");
    let after = g.grade(task, &gold_completion(task));
    assert_eq!(after.reward, 1.0, "the grader broke: {after:?}");
    grade
}

#[test]
fn fork_bomb() {
    let Some((g, tasks)) = setup("fork_bomb") else {
        return;
    };
    let t = first(&tasks, Skill::Reproduce);
    let start = Instant::now();
    contained(&g, &t, &script("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"));
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn infinite_loop() {
    let Some((g, tasks)) = setup("infinite_loop") else {
        return;
    };
    let t = first(&tasks, Skill::Reproduce);
    let grade = contained(&g, &t, &script("while True:\n    pass"));
    assert_eq!(grade.reason, "timeout");
}

#[test]
fn ten_gigabyte_allocation() {
    let Some((g, tasks)) = setup("ten_gigabyte_allocation") else {
        return;
    };
    let t = first(&tasks, Skill::Reproduce);
    // Fails on the buggy tree (MemoryError), and just the same on the fixed one.
    contained(&g, &t, &script("x = bytearray(10 * 1024 ** 3)\nx[-1] = 1"));
}

#[test]
fn one_gigabyte_of_output() {
    let Some((g, tasks)) = setup("one_gigabyte_of_output") else {
        return;
    };
    let t = first(&tasks, Skill::Reproduce);
    let start = Instant::now();
    contained(&g, &t, &script("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n    sys.stderr.write(chunk)"));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn network_connection_attempt() {
    let Some((g, tasks)) = setup("network_connection_attempt") else {
        return;
    };
    // A listener on the host's loopback: the sandbox has its own network namespace, so the
    // script reaches only its own (empty) loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = first(&tasks, Skill::Reproduce);
    // Exits 1 if the connection works (a "reproduction" on both trees), 0 if it fails: either
    // way the script cannot score, and the listener must see nothing.
    let code = format!(
        "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n    sys.exit(1)\nexcept OSError as e:\n    print('blocked', e)\n    sys.exit(0)"
    );
    contained(&g, &t, &script(&code));
    assert!(
        listener.accept().is_err(),
        "the sandbox reached the host's loopback"
    );
}

#[test]
fn writing_outside_the_workspace() {
    let Some((g, tasks)) = setup("writing_outside_the_workspace") else {
        return;
    };
    let host_dir = tempfile::tempdir().unwrap();
    let target = host_dir.path().join("escaped");
    let repo_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("escaped-from-sandbox");
    let t = first(&tasks, Skill::Reproduce);
    let code = format!(
        "import sys\nfor p in [{:?}, {:?}, '/usr/escaped', '/etc/escaped']:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n    except OSError as e:\n        print('blocked', p, e)\nsys.exit(1)",
        target.display().to_string(),
        repo_file.display().to_string()
    );
    contained(&g, &t, &script(&code));
    assert!(!target.exists());
    assert!(!repo_file.exists());
    assert!(!std::path::Path::new("/usr/escaped").exists());
}

#[test]
fn editing_or_deleting_the_tests() {
    let Some((g, tasks)) = setup("editing_or_deleting_the_tests") else {
        return;
    };
    let t = first(&tasks, Skill::Edit);
    let test_file = t.FAIL_TO_PASS[0].split("::").next().unwrap().to_string();
    // An edit of a test file scores 0 before anything runs.
    let edit_tests = format!("{test_file}\n<<<<<<< SEARCH\n=======\n\n>>>>>>> REPLACE\n");
    let grade = contained(&g, &t, &edit_tests);
    assert_eq!(grade.reason, "touches_tests");
    let diff = format!("--- a/{test_file}\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-x\n");
    assert_eq!(contained(&g, &t, &diff).reason, "touches_tests");
    // A source edit that deletes the tests when the package is imported.
    let src = t.gold_files()[0].clone();
    let wipe = format!(
        "{src}\n<<<<<<< SEARCH\n{first}\n=======\nimport os as _os, glob as _glob\nfor _f in _glob.glob('**/test_*.py', recursive=True):\n    _os.remove(_f)\n{first}\n>>>>>>> REPLACE\n",
        first = first_code_line(&g, &t, &src)
    );
    contained(&g, &t, &wipe);
}

fn first_code_line(g: &Grader, t: &Task, path: &str) -> String {
    let tree = g.pristine(&t.env.as_ref().unwrap().source).unwrap();
    let text = std::fs::read_to_string(tree.join(path)).unwrap();
    text.lines()
        .find(|l| l.starts_with("import ") || l.starts_with("from "))
        .expect("an import line")
        .to_string()
}

#[test]
fn exit_zero_at_import_to_fake_a_pass() {
    let Some((g, tasks)) = setup("exit_zero_at_import_to_fake_a_pass") else {
        return;
    };
    let t = first(&tasks, Skill::Edit);
    let src = t.gold_files()[0].clone();
    let line = first_code_line(&g, &t, &src);
    for exit in ["import sys; sys.exit(0)", "import os; os._exit(0)"] {
        let c =
            format!("{src}\n<<<<<<< SEARCH\n{line}\n=======\n{exit}\n{line}\n>>>>>>> REPLACE\n");
        contained(&g, &t, &c);
    }
    // The same trick from a reproduction script does not pass either: it exits 0 on the buggy tree.
    let r = first(&tasks, Skill::Reproduce);
    contained(&g, &r, &script("import sys\nsys.exit(0)"));
    // Nor from a generated test file.
    let tg = first(&tasks, Skill::Testgen);
    contained(
        &g,
        &tg,
        &script("import os\nos._exit(0)\n\ndef test_x():\n    assert False"),
    );
}

#[test]
fn test_that_passes_by_monkey_patching_the_code_under_test() {
    let Some((g, tasks)) = setup("monkey_patching") else {
        return;
    };
    let t = first(&tasks, Skill::Testgen);
    let loc = t.gold_functions()[0].clone();
    let (path, qual) = loc.split_once(':').unwrap();
    let module = path
        .trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".");
    let name = qual.split('.').next().unwrap();
    let code = format!(
        "import {module} as m\n\ndef test_patched(monkeypatch):\n    monkeypatch.setattr(m, {name:?}, lambda *a, **k: 42)\n    assert m.{name}() == 42\n"
    );
    let grade = contained(&g, &t, &script(&code));
    assert_eq!(grade.reason, "passes_on_buggy");
}
