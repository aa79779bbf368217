//! Grading throughput per skill (gold answers of the built-in corpus, on the configured number
//! of workers) and the sandbox's own overhead per run against a bare `bwrap true`.
//!
//! `cargo bench --bench grading` (needs bwrap and the fetched sources; see docs/skills.md).
//! ATOMRL_BENCH_N sets the instances per skill (default 12).

use atomrl::sandbox::{copy_tree, Job, Limits, Sandbox, SandboxConfig};
use atomrl::skills::{gold_completion, load_tasks, BadLine, Grader, GraderConfig, Skill, Task};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn mean_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / n as f64
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tasks: Vec<Task> = Vec::new();
    for split in ["train", "test"] {
        tasks.extend(
            load_tasks(
                &root.join(format!("data/corpus/{split}.jsonl")),
                BadLine::Refuse,
            )?
            .0,
        );
    }
    let n: usize = std::env::var("ATOMRL_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let cfg = GraderConfig::default();
    let workers = cfg.workers;
    let grader = match Grader::new(cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: the sandbox cannot run here: {e:#}");
            return Ok(());
        }
    };
    grader.prepare(&tasks)?;

    println!("## Sandbox overhead per run (mean of 40, one at a time)\n");
    let ws = tempfile::tempdir()?;
    let bare = mean_ms(40, || {
        let st = Command::new("bwrap")
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/usr",
                "/usr",
                "--ro-bind",
                "/lib",
                "/lib",
            ])
            .args([
                "--ro-bind-try",
                "/lib64",
                "/lib64",
                "--ro-bind",
                "/bin",
                "/bin",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "true",
            ])
            .status()
            .expect("bwrap runs");
        assert!(st.success());
    });
    let sb = Sandbox::new(SandboxConfig::default())?;
    let limits = Limits::default();
    let run = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let out = sb
            .run(&Job {
                workspace: ws.path(),
                argv: &argv,
                env: &[],
                mounts: &[],
                limits: &limits,
            })
            .unwrap();
        assert!(out.success(), "{out:?}");
    };
    let ours = mean_ms(40, || run(&["true"]));
    let py_bare = mean_ms(20, || {
        assert!(Command::new("/usr/bin/python3")
            .args(["-c", "pass"])
            .status()
            .unwrap()
            .success());
    });
    let py_ours = mean_ms(20, || run(&["/usr/bin/python3", "-c", "pass"]));
    println!("| run | ms |\n| --- | ---: |");
    println!("| bare `bwrap true` | {bare:.2} |");
    println!("| `Sandbox::run(true)` (rlimits, uid drop, capture, timeout thread) | {ours:.2} |");
    println!("| bare `python3 -c pass` | {py_bare:.2} |");
    println!("| `Sandbox::run(python3 -c pass)` | {py_ours:.2} |");

    println!("\n## Fresh workspace copy per grading (mean of 20)\n");
    println!("| tree | files | KiB | ms |\n| --- | ---: | ---: | ---: |");
    let mut seen = std::collections::BTreeSet::new();
    for t in &tasks {
        let src = &t.env.as_ref().unwrap().source;
        if !seen.insert(t.repo.clone()) {
            continue;
        }
        let tree = grader.pristine(src)?;
        let dst = tempfile::tempdir()?;
        let mut i = 0;
        let mut bytes = 0;
        let ms = mean_ms(20, || {
            i += 1;
            bytes = copy_tree(&tree, &dst.path().join(i.to_string())).unwrap();
        });
        let files = walkdir_count(&tree);
        println!("| {} | {files} | {} | {ms:.2} |", t.repo, bytes / 1024);
    }

    println!(
        "\n## Gold gradings per second ({workers} workers, {n} instances per skill, both splits)\n"
    );
    println!("| skill | gradings | s | gradings/s | sandbox runs per grading | ms per grading (mean, one worker's view) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for skill in Skill::ALL {
        let mut pick: Vec<&Task> = Vec::new();
        for split in ["train", "test"] {
            pick.extend(
                tasks
                    .iter()
                    .filter(|t| t.skill == skill && t.split.as_deref() == Some(split))
                    .take(n / 2),
            );
        }
        let golds: Vec<String> = pick.iter().map(|t| gold_completion(t)).collect();
        let items: Vec<(&Task, &str)> = pick
            .iter()
            .zip(&golds)
            .map(|(t, g)| (*t, g.as_str()))
            .collect();
        let start = Instant::now();
        let grades = grader.grade_batch(&items);
        let secs = start.elapsed().as_secs_f64();
        assert!(
            grades.iter().all(|g| g.reward == 1.0),
            "{skill}: gold did not score 1"
        );
        let runs = grades.iter().map(|g| g.timings.runs as f64).sum::<f64>() / grades.len() as f64;
        let ms = grades.iter().map(|g| g.timings.total_ms).sum::<f64>() / grades.len() as f64;
        println!(
            "| {skill} | {} | {secs:.2} | {:.1} | {runs:.1} | {ms:.0} |",
            items.len(),
            items.len() as f64 / secs
        );
    }
    Ok(())
}

fn walkdir_count(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walkdir_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
