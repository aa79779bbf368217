//! Shared set-up for the grading tests: the built-in corpus and a grader, or a printed reason
//! why a test is skipped (no bwrap, no fetched sources, no pytest).
#![allow(dead_code)]

use atomrl::skills::{load_tasks, BadLine, Grader, GraderConfig, Skill, Source, Task};
use std::path::PathBuf;

pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/corpus")
}

/// Every task of the built-in corpus (train then test).
pub fn corpus() -> Vec<Task> {
    let mut all = Vec::new();
    for split in ["train", "test"] {
        let (tasks, errors) = load_tasks(
            &corpus_dir().join(format!("{split}.jsonl")),
            BadLine::Refuse,
        )
        .expect("corpus loads");
        assert!(errors.is_empty());
        all.extend(tasks);
    }
    all
}

/// A grader whose sandbox works and whose cache has what `tasks` need, or None after printing
/// why the calling test is skipped.
pub fn grader_for(test: &str, tasks: &[Task], cfg: GraderConfig) -> Option<Grader> {
    let cache = cfg.cache_dir.clone();
    if !cache.join("pydeps").join("pytest").is_dir() {
        eprintln!(
            "SKIPPED {test}: pytest is not installed in {} (run scripts/install-sandbox-deps.sh)",
            cache.join("pydeps").display()
        );
        return None;
    }
    for t in tasks {
        if let Some(env) = &t.env {
            if let Source::Sdist { file, .. } = &env.source {
                if !cache.join("sdists").join(file).is_file() {
                    eprintln!("SKIPPED {test}: {file} is not fetched (run scripts/fetch-corpus-sources.sh)");
                    return None;
                }
            }
        }
    }
    match Grader::new(cfg) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("SKIPPED {test}: the sandbox cannot run here: {e:#}");
            None
        }
    }
}

/// The first `n` tasks of each skill, taken from both splits.
pub fn sample(tasks: &[Task], per_skill_and_split: usize) -> Vec<Task> {
    let mut out = Vec::new();
    for split in ["train", "test"] {
        for skill in Skill::ALL {
            out.extend(
                tasks
                    .iter()
                    .filter(|t| t.skill == skill && t.split.as_deref() == Some(split))
                    .take(per_skill_and_split)
                    .cloned(),
            );
        }
    }
    out
}

pub fn first(tasks: &[Task], skill: Skill) -> Task {
    tasks
        .iter()
        .find(|t| t.skill == skill)
        .cloned()
        .expect("a task of the skill")
}
