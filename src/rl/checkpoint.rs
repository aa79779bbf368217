//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! ```text
//! run_dir/
//!   latest                 "step_12": the newest complete checkpoint
//!   step_10/  step_12/     the last `keep_last` checkpoints
//!     model.safetensors config.json tokenizer*.json   a Hugging Face model directory
//!     optimizer.safetensors                           AdamW moments (exp_avg.*, exp_avg_sq.*)
//!     trainer_state.json                              step, RNG, data position, run config,
//!                                                     and the size of every file above
//! ```
//!
//! A checkpoint is written under `.step_N.tmp/`, `trainer_state.json` last, then renamed to
//! `step_N/`, and only then does `latest` (itself written to a temporary name and renamed) point
//! at it; a crash at any moment leaves the previous checkpoint intact and named by `latest`.
//! Loading checks every file against the sizes recorded in `trainer_state.json` and parses the
//! safetensors headers; a checkpoint that fails is reported and the next older one is tried.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::checkpoint::{load_weights, read_all, save_model_dir, write_safetensors, SaveDtype};
use crate::model::{ModelConfig, Weights};

/// The trainer's own state, stored as `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The run's random generator state.
    pub rng: u64,
    /// How far into the data the run has read (prompts consumed).
    pub data_position: u64,
    /// The run configuration, as the trainer serialised it.
    pub config: serde_json::Value,
    /// Per-step records the run wants back on resume (e.g. losses).
    #[serde(default)]
    pub history: serde_json::Value,
}

/// `trainer_state.json`: the state plus the manifest that makes truncation detectable.
#[derive(Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: TrainerState,
    /// Size in bytes of every other file of the checkpoint.
    files: BTreeMap<String, u64>,
}

/// What [`save`] writes.
pub struct Checkpoint<'a> {
    pub config: &'a ModelConfig,
    pub weights: &'a Weights<Vec<f32>>,
    /// Where `config.json` and the tokenizer files are copied from.
    pub source_dir: &'a Path,
    /// Optimizer tensors (name, shape, data).
    pub optimizer: &'a [crate::rl::optimizer::NamedTensor],
    pub state: &'a TrainerState,
}

/// A checkpoint read back by [`load_latest`].
pub struct Loaded {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: Weights<Vec<f32>>,
    pub optimizer: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub state: TrainerState,
    /// Newer checkpoints that were rejected, with the reason.
    pub rejected: Vec<String>,
}

pub const LATEST: &str = "latest";
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

fn step_dir_name(step: u64) -> String {
    format!("step_{step}")
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", path.display()))
}

/// Writes checkpoint `step_N` into `run_dir`, points `latest` at it, and keeps the newest
/// `keep_last` checkpoints (at least this one). Returns the checkpoint's directory.
pub fn save(run_dir: &Path, ckpt: &Checkpoint, keep_last: usize) -> Result<PathBuf> {
    let name = step_dir_name(ckpt.state.step);
    fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let tmp = run_dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing the stale {}", tmp.display()))?;
    }
    save_model_dir(&tmp, ckpt.config, ckpt.weights, ckpt.source_dir, SaveDtype::F32)?;
    let opt: Vec<(String, Vec<usize>, &[f32])> = ckpt.optimizer.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice())).collect();
    write_safetensors(&tmp.join(OPTIMIZER_FILE), &opt, SaveDtype::F32)?;

    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        sync_file(&entry.path())?;
        files.insert(file, entry.metadata()?.len());
    }
    let state = StateFile { state: ckpt.state.clone(), files };
    let state_path = tmp.join(STATE_FILE);
    fs::write(&state_path, serde_json::to_vec_pretty(&state)?).with_context(|| format!("writing {}", state_path.display()))?;
    sync_file(&state_path)?;

    let dir = run_dir.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    let latest_tmp = run_dir.join(".latest.tmp");
    fs::write(&latest_tmp, format!("{name}\n")).with_context(|| format!("writing {}", latest_tmp.display()))?;
    sync_file(&latest_tmp)?;
    fs::rename(&latest_tmp, run_dir.join(LATEST)).context("updating the latest marker")?;
    if let Ok(d) = fs::File::open(run_dir) {
        let _ = d.sync_all();
    }

    let mut steps = list_steps(run_dir)?;
    steps.retain(|&s| s != ckpt.state.step);
    steps.sort_unstable_by(|a, b| b.cmp(a));
    for old in steps.into_iter().skip(keep_last.saturating_sub(1)) {
        let path = run_dir.join(step_dir_name(old));
        fs::remove_dir_all(&path).with_context(|| format!("removing the old checkpoint {}", path.display()))?;
    }
    Ok(dir)
}

/// The steps of the `step_N` directories in `run_dir`, unordered.
fn list_steps(run_dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    if !run_dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("step_").and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Checks one checkpoint directory: its state file parses and every file it lists is present
/// with the recorded size. Returns the trainer state.
pub fn validate(dir: &Path) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let text = fs::read(&state_path).with_context(|| format!("reading {}", state_path.display()))?;
    let state: StateFile = serde_json::from_slice(&text).with_context(|| format!("{} is not valid (truncated?)", state_path.display()))?;
    for required in ["model.safetensors", "config.json", OPTIMIZER_FILE] {
        ensure!(state.files.contains_key(required), "{} lists no {required}", state_path.display());
    }
    for (file, &size) in &state.files {
        let path = dir.join(file);
        let actual = fs::metadata(&path).with_context(|| format!("checkpoint file {} is missing", path.display()))?.len();
        ensure!(actual == size, "checkpoint file {} has {actual} bytes, {size} were written (truncated or modified)", path.display());
    }
    Ok(state.state)
}

fn load_dir(dir: &Path) -> Result<Loaded> {
    let state = validate(dir)?;
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let weights = load_weights(dir, &config)?;
    let optimizer = read_all(&dir.join(OPTIMIZER_FILE))?;
    Ok(Loaded { dir: dir.to_path_buf(), config, weights, optimizer, state, rejected: Vec::new() })
}

/// Loads the checkpoint named by `latest`, or, when it fails validation, the newest older one
/// that passes (the failures are listed in [`Loaded::rejected`]). `None` when the run directory
/// holds no checkpoint; an error when it holds some and none is usable.
pub fn load_latest(run_dir: &Path) -> Result<Option<Loaded>> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(text) = fs::read_to_string(run_dir.join(LATEST)) {
        let name = text.trim();
        if !name.is_empty() {
            candidates.push(name.to_string());
        }
    }
    let mut steps = list_steps(run_dir)?;
    steps.sort_unstable_by(|a, b| b.cmp(a));
    for s in steps {
        let name = step_dir_name(s);
        if !candidates.contains(&name) {
            candidates.push(name);
        }
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    let mut rejected = Vec::new();
    for name in candidates {
        match load_dir(&run_dir.join(&name)) {
            Ok(mut l) => {
                l.rejected = rejected;
                return Ok(Some(l));
            }
            Err(e) => rejected.push(format!("{name}: {e:#}")),
        }
    }
    bail!("no usable checkpoint in {}:\n  {}", run_dir.display(), rejected.join("\n  "))
}
