//! Building real task instances from Python packages by mutation.
//!
//! For each package (pinned sdist, `data/corpus/sources.tsv`): run its test suite once in the
//! sandbox, recording which package functions each test calls; enumerate mutations (tree-sitter)
//! in the covered functions; keep a mutant iff at least one of the tests covering it fails while
//! others still pass; and from each kept mutant emit one instance per skill, each checked by
//! grading its gold answer. Seeded and deterministic: the same sources, seed and limits give the
//! same corpus.

mod instance;
pub mod mutate;
mod search;
mod sources;
mod text;

pub use sources::{read_sources, PackageSpec};

use crate::rng::Rng;
use crate::sandbox::Limits;
use crate::skills::{pysrc, Env, Grader, Skill, Source, Task};
use anyhow::Result;
use mutate::Mutation;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    /// Mutants kept per package, at most.
    pub max_mutants: usize,
    /// Mutants tried per package, at most.
    pub max_candidates: usize,
    /// Mutants kept per function, at most.
    pub per_function: usize,
    /// Concurrent sandbox runs.
    pub workers: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            max_mutants: 40,
            max_candidates: 400,
            per_function: 2,
            workers: 2,
        }
    }
}

/// The synthesis generator: SplitMix64 from a seed mixed once more, so that every corpus built
/// since the first one comes out the same.
fn seeded(seed: u64) -> Rng {
    Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
}

fn seed_for(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A package file and its functions.
struct SourceFile {
    path: String,
    text: String,
    funcs: Vec<pysrc::Function>,
}

/// A candidate mutant.
#[derive(Clone)]
struct Candidate {
    file: usize,
    /// The innermost function holding the mutation (index into the file's functions).
    func: usize,
    mutation: Mutation,
}

/// A kept mutant and what its tests said.
struct Kept {
    cand: Candidate,
    fail_to_pass: Vec<String>,
    pass_to_pass: Vec<String>,
    messages: BTreeMap<String, String>,
}

/// Builds the instances of one package. `log` gets progress lines.
pub fn synth_package(grader: &Grader, spec: &PackageSpec, cfg: &SynthConfig, log: &dyn Fn(&str)) -> Result<Vec<Task>> {
    let source = spec.source();
    let tree = grader.pristine(&source)?;
    let base = Task {
        instance_id: format!("{}__baseline", spec.name),
        skill: Skill::Edit,
        env: Some(Env {
            source,
            test_cmd: None,
            pythonpath: spec.pythonpath.clone(),
            limits: Limits { time_s: 300.0, cpu_s: 300, ..Limits::default() },
            testgen_path: None,
        }),
        ..Task::default()
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cfg.workers.max(1)).build()?;
    let (files, kept) = search::find_mutants(grader, spec, cfg, &tree, &base, &pool, log)?;
    Ok(instance::emit(grader, spec, cfg, &base, &files, &kept, &pool, log))
}

/// Builds the corpus of all packages into `<out>/train.jsonl` and `<out>/test.jsonl`.
pub fn synth_all(
    grader: &Grader,
    specs: &[PackageSpec],
    cfg: &SynthConfig,
    out: &Path,
    log: &dyn Fn(&str),
) -> Result<Vec<Task>> {
    let mut all = Vec::new();
    for spec in specs {
        all.extend(synth_package(grader, spec, cfg, log)?);
    }
    std::fs::create_dir_all(out)?;
    for split in ["train", "test"] {
        let part: Vec<Task> = all
            .iter()
            .filter(|t| t.split.as_deref() == Some(split))
            .cloned()
            .collect();
        crate::skills::write_tasks(&out.join(format!("{split}.jsonl")), &part)?;
    }
    Ok(all)
}

impl PackageSpec {
    pub fn source(&self) -> Source {
        if let Some(dir) = &self.local_dir {
            return Source::Dir { path: dir.clone() };
        }
        Source::Sdist {
            name: self.name.clone(),
            version: self.version.clone(),
            file: self.file.clone(),
            sha256: self.sha256.clone(),
        }
    }
}
