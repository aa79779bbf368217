//! The agent tools on a real workspace of a corpus task: every tool, path escapes, time limits,
//! truncation, and the diff of the agent's edits (which the edit grader then accepts).

mod skills_support;

use atomrl::agent::tools::{
    parse_tool_call, CallParse, Observation, ToolCall, ToolConfig, Toolbox,
};
use atomrl::skills::patch::{apply_edits, parse_unified_diff};
use atomrl::skills::{Grader, GraderConfig, Skill, Task};
use skills_support::*;

const FILE: &str = "src/cachetools/__init__.py";
const BUGGY: &str = "            self.__nesting -= 0\n";
const FIXED: &str = "            self.__nesting -= 1\n";

/// The first edit task of the test split (cachetools: its bug is `self.__nesting -= 0` in
/// `_TimedCache._Timer.__exit__`) and a grader, or None when the test is skipped.
fn setup(test: &str) -> Option<(Grader, Task)> {
    let task = corpus()
        .into_iter()
        .find(|t| t.skill == Skill::Edit && t.split.as_deref() == Some("test"))
        .expect("an edit task in the test split");
    assert!(
        task.bug_patch.contains("self.__nesting -= 0"),
        "the corpus changed: {}",
        task.instance_id
    );
    let grader = grader_for(test, std::slice::from_ref(&task), GraderConfig::default())?;
    Some((grader, task))
}

fn view(path: &str, start: Option<usize>, end: Option<usize>) -> ToolCall {
    ToolCall::View {
        path: path.into(),
        start,
        end,
    }
}

fn run(command: &str) -> ToolCall {
    ToolCall::Run {
        command: command.into(),
    }
}

fn edit(path: &str, search: &str, replace: &str) -> ToolCall {
    ToolCall::Edit {
        path: path.into(),
        search: search.into(),
        replace: replace.into(),
    }
}

fn ok(obs: Observation) -> String {
    assert!(obs.ok, "want ok, got: {}", obs.text);
    obs.text
}

fn fails(obs: Observation, needle: &str) -> String {
    assert!(!obs.ok, "want a failure, got: {}", obs.text);
    assert!(
        obs.text.contains(needle),
        "want {needle:?} in: {}",
        obs.text
    );
    obs.text
}

#[test]
fn view_search_and_list_show_the_repository() {
    let Some((grader, task)) = setup("agent_tools view/search/list") else {
        return;
    };
    let mut tb = Toolbox::open(&grader, &task, &ToolConfig::default()).unwrap();

    let text = ok(tb.execute(&view(FILE, Some(320), Some(330))));
    assert!(text.starts_with(" 320| "), "{text}");
    assert!(
        text.contains(" 325|             self.__nesting -= 0\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("[{FILE}: lines 320-330 of ")),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.contains("| ")).count(), 11);
    // Without a range: the first max_view_lines lines, and how to see more.
    let text = ok(tb.execute(&view(FILE, None, None)));
    assert!(text.starts_with("   1| "), "{text}");
    assert!(text.contains("view with start="), "{text}");
    // The sandbox's absolute path is accepted.
    ok(tb.execute(&view(&format!("/workspace/{FILE}"), Some(1), Some(3))));
    fails(tb.execute(&view(FILE, Some(100_000), None)), "past the end");
    fails(tb.execute(&view(FILE, Some(20), Some(10))), "before start");
    fails(
        tb.execute(&view("src/cachetools/nope.py", None, None)),
        "no such file",
    );
    fails(tb.execute(&view("src", None, None)), "is a directory");

    let search = |pattern: &str, path: Option<&str>| ToolCall::Search {
        pattern: pattern.into(),
        path: path.map(str::to_string),
    };
    let text = ok(tb.execute(&search(r"def __exit__\(self", None)));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{FILE}:324: def __exit__"))),
        "{text}"
    );
    let text = ok(tb.execute(&search(r"class TTLCache\(", Some("src"))));
    assert!(text.contains(&format!("{FILE}:")), "{text}");
    let text = ok(tb.execute(&search(r"class TTLCache\(", Some("tests"))));
    assert!(text.contains("no matches"), "{text}");
    // Hits are sorted by path and capped.
    let cfg = ToolConfig {
        max_search_hits: 10,
        ..ToolConfig::default()
    };
    let text = ok(Toolbox::open(&grader, &task, &cfg)
        .unwrap()
        .execute(&search("import", None)));
    let hits: Vec<&str> = text.lines().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(hits.len(), 10, "{text}");
    let paths: Vec<&str> = hits.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert!(paths.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert!(
        text.ends_with(" matches shown; narrow the pattern or the path]"),
        "{text}"
    );
    fails(
        tb.execute(&search("def (", None)),
        "invalid regular expression",
    );
    fails(
        tb.execute(&search("x", Some("missing_dir"))),
        "no such file or directory",
    );

    let text = ok(tb.execute(&ToolCall::List { path: None }));
    assert!(text.starts_with("./\n"), "{text}");
    assert!(text.contains("\n  src/\n    cachetools/\n"), "{text}");
    assert!(text.contains("\n  tests/\n"), "{text}");
    assert!(
        !text.contains("__pycache__") && !text.contains(".atomrl-complete"),
        "{text}"
    );
    let text = ok(tb.execute(&ToolCall::List {
        path: Some("src/cachetools".into()),
    }));
    assert!(
        text.starts_with("src/cachetools/\n") && text.contains("  __init__.py\n"),
        "{text}"
    );
    fails(
        tb.execute(&ToolCall::List {
            path: Some(FILE.into()),
        }),
        "is a file",
    );

    assert_eq!(
        ok(tb.execute(&ToolCall::Submit { answer: "x".into() })),
        "submitted"
    );
    assert_eq!(tb.diff().unwrap(), "", "reading changes nothing");
}

#[test]
fn run_uses_the_sandbox_and_its_time_limit() {
    let Some((grader, task)) = setup("agent_tools run") else {
        return;
    };
    let cfg = ToolConfig {
        run_timeout_s: 1.0,
        ..ToolConfig::default()
    };
    let mut tb = Toolbox::open(&grader, &task, &cfg).unwrap();

    assert_eq!(
        ok(tb.execute(&run("python -c 'print(1+1)'"))),
        "exit code 0\n2"
    );
    // The package imports as in grading; the working directory is the repository root.
    let text = ok(tb.execute(&run(
        "python -c 'import cachetools; print(cachetools.TTLCache.__name__)'; ls",
    )));
    assert!(
        text.starts_with("exit code 0\nTTLCache\n") && text.contains("\nsrc\n"),
        "{text}"
    );
    // Exit status, stderr and empty output.
    let text = ok(tb.execute(&run("echo out; echo err >&2; exit 3")));
    assert_eq!(text, "exit code 3\nout\nerr");
    assert_eq!(ok(tb.execute(&run("true"))), "exit code 0\n(no output)");
    let text = ok(tb.execute(&run("python -c 'import sys; sys.exit(\"boom\")'")));
    assert_eq!(text, "exit code 1\nboom");
    // No network, no host files.
    let text = ok(tb.execute(&run("cat /etc/passwd; ls /root /work 2>&1 | head -3")));
    assert!(!text.contains("root:x:0"), "{text}");

    let start = std::time::Instant::now();
    let text = fails(
        tb.execute(&run("echo started; sleep 30")),
        "time limit of 1 s",
    );
    assert!(
        start.elapsed().as_secs_f64() < 10.0,
        "killed late: {:?}",
        start.elapsed()
    );
    assert!(text.starts_with("killed: "), "{text}");
    assert!(tb.timings().runs >= 6);
}

#[test]
fn edits_become_a_diff_the_edit_grader_accepts() {
    let Some((grader, task)) = setup("agent_tools edit/diff") else {
        return;
    };
    let mut tb = Toolbox::open(&grader, &task, &ToolConfig::default()).unwrap();
    let buggy = std::fs::read_to_string(tb.root().join(FILE)).unwrap();
    assert_eq!(tb.diff().unwrap(), "");

    fails(
        tb.execute(&edit(FILE, "self.__nesting -= 7", "x")),
        "not found",
    );
    fails(
        tb.execute(&edit(FILE, " 325|             self.__nesting -= 0", "x")),
        "line numbers",
    );
    let text = fails(tb.execute(&edit(FILE, "self.__nesting", "x")), "occurs ");
    assert!(
        text.contains("times in src/cachetools/__init__.py"),
        "{text}"
    );
    fails(tb.execute(&edit(FILE, "", "x = 1\n")), "already exists");
    fails(
        tb.execute(&edit("src/cachetools/nope.py", "a", "b")),
        "no such file",
    );
    assert_eq!(tb.diff().unwrap(), "", "failed edits change nothing");

    let text = ok(tb.execute(&edit(FILE, BUGGY, FIXED)));
    assert!(
        text.starts_with(&format!("edited {FILE}; lines 323-")),
        "{text}"
    );
    assert!(
        text.contains(" 325|             self.__nesting -= 1"),
        "{text}"
    );

    let diff = tb.diff().unwrap();
    assert!(
        diff.starts_with(&format!(
            "diff --git a/{FILE} b/{FILE}\n--- a/{FILE}\n+++ b/{FILE}\n@@ "
        )),
        "{diff}"
    );
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-            self.__nesting -= 0",
            "+            self.__nesting -= 1"
        ],
        "{diff}"
    );
    // Applied to a fresh buggy workspace, the diff reproduces the edit...
    let fresh = Toolbox::open(&grader, &task, &ToolConfig::default()).unwrap();
    apply_edits(fresh.root(), &parse_unified_diff(&diff), 0).unwrap();
    let after = std::fs::read_to_string(fresh.root().join(FILE)).unwrap();
    assert_eq!(after, buggy.replacen(BUGGY, FIXED, 1));
    // ... and it is a fix the edit grader scores 1.
    let grade = grader.grade(&task, &format!("```diff\n{diff}```\n"));
    assert_eq!(grade.reward, 1.0, "{grade:?}");

    // New and deleted files, made by edit or by commands, are in the diff; caches are not.
    let text = ok(tb.execute(&edit("scratch/new_mod.py", "", "print('hello')\n")));
    assert_eq!(text, "created scratch/new_mod.py (1 lines)");
    assert_eq!(
        ok(tb.execute(&run("python scratch/new_mod.py"))),
        "exit code 0\nhello"
    );
    ok(tb.execute(&run(
        "rm tox.ini && python -m pytest -q tests/test_ttl.py > /dev/null; ls -a",
    )));
    let diff = tb.diff().unwrap();
    assert!(diff.contains("diff --git a/scratch/new_mod.py b/scratch/new_mod.py\nnew file mode 100644\n--- /dev/null\n+++ b/scratch/new_mod.py\n@@ -0,0 +1 @@\n+print('hello')\n"), "{diff}");
    assert!(diff.contains("diff --git a/tox.ini b/tox.ini\ndeleted file mode 100644\n--- a/tox.ini\n+++ /dev/null\n"), "{diff}");
    assert!(
        !diff.contains("pytest_cache") && !diff.contains("__pycache__"),
        "{diff}"
    );
    let files: Vec<String> = parse_unified_diff(&diff)
        .iter()
        .map(|e| e.path().to_string())
        .collect();
    assert_eq!(
        files,
        ["scratch/new_mod.py", FILE, "tox.ini"],
        "sorted by path"
    );

    let root = tb.root().to_path_buf();
    drop(tb);
    assert!(!root.exists(), "the workspace goes with the toolbox");
}

#[test]
fn paths_outside_the_workspace_are_refused() {
    let Some((grader, task)) = setup("agent_tools escapes") else {
        return;
    };
    let mut tb = Toolbox::open(&grader, &task, &ToolConfig::default()).unwrap();
    for path in [
        "../x",
        "/etc/passwd",
        "src/../../x",
        "/workspace/../etc/passwd",
    ] {
        fails(tb.execute(&view(path, None, None)), "not allowed");
        fails(tb.execute(&edit(path, "", "x")), "not allowed");
        fails(
            tb.execute(&ToolCall::List {
                path: Some(path.into()),
            }),
            "not allowed",
        );
        fails(
            tb.execute(&ToolCall::Search {
                pattern: "root".into(),
                path: Some(path.into()),
            }),
            "not allowed",
        );
    }
    // A symlink made inside the sandbox does not lead out of it.
    ok(tb.execute(&run("ln -s /etc/passwd link && ln -s / rootlink")));
    fails(tb.execute(&view("link", None, None)), "not allowed");
    fails(
        tb.execute(&view("rootlink/etc/passwd", None, None)),
        "not allowed",
    );
    fails(tb.execute(&edit("link", "", "x")), "not allowed");
    let text = ok(tb.execute(&ToolCall::Search {
        pattern: "nologin".into(),
        path: None,
    }));
    assert!(text.contains("no matches"), "{text}");
    assert!(!std::path::Path::new("/x").exists());
}

#[test]
fn long_observations_are_truncated_and_bad_calls_are_observations() {
    let Some((grader, task)) = setup("agent_tools truncation") else {
        return;
    };
    let cfg = ToolConfig {
        observation_chars: 300,
        max_search_hits: 1000,
        ..ToolConfig::default()
    };
    let mut tb = Toolbox::open(&grader, &task, &cfg).unwrap();

    let obs = tb.execute(&ToolCall::Search {
        pattern: ".".into(),
        path: None,
    });
    assert!(obs.ok);
    let (_, marker) = obs
        .text
        .split_once("\n[... truncated ")
        .expect("a truncation marker");
    assert!(marker.ends_with(" characters]"), "{}", obs.text);
    assert!(
        obs.text.chars().count() <= 300 && obs.text.chars().count() > 250,
        "{}",
        obs.text
    );

    let text = ok(tb.execute(&run("python -c 'print(\"a\" * 5000); print(\"THE END\")'")));
    assert!(
        text.starts_with("exit code 0\naaa") && text.ends_with("THE END"),
        "{text}"
    );
    assert!(text.contains("\n[... truncated "), "{text}");
    assert!(text.chars().count() <= 300, "{}", text.chars().count());

    // View fits whole lines into the budget and says where it stopped.
    let text = ok(tb.execute(&view(FILE, Some(1), Some(80))));
    assert!(
        text.chars().count() <= 300 && text.contains("view with start="),
        "{text}"
    );

    // What a model might send: every one is an observation, none a panic.
    for turn in [
        r#"<tool_call>{"name": "view", "arguments": {"path": 3}}</tool_call>"#,
        r#"<tool_call>{"name": "rm", "arguments": {"path": "x"}}</tool_call>"#,
        r#"<tool_call>{"name": "edit", "arguments": {"path": "a.py"}"#,
        "<tool_call>not json</tool_call>",
    ] {
        match parse_tool_call(turn) {
            CallParse::Malformed(m) => assert!(m.contains("<tool_call>"), "{m}"),
            other => panic!("{turn}: {other:?}"),
        }
    }
    for call in [
        view("", None, None),
        view(".", None, None),
        view(
            "src/cachetools/__init__.py",
            Some(usize::MAX),
            Some(usize::MAX),
        ),
        edit(".", "a", "b"),
        edit("src", "a", "b"),
        edit("src/cachetools", "", "x"),
        ToolCall::Search {
            pattern: "a{1000000}".into(),
            path: None,
        },
        ToolCall::List {
            path: Some("missing".into()),
        },
    ] {
        let obs = tb.execute(&call);
        assert!(!obs.ok, "{call:?}: {}", obs.text);
        assert!(!obs.text.is_empty());
    }
    assert_eq!(tb.diff().unwrap(), "");
}
