//! `metrics.jsonl`: one JSON object per step, appended and flushed as each step ends.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Metrics;

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl` for appending. When resuming after `last_step`, lines of later
    /// steps (written after the checkpoint the run resumes from) are dropped first, so that every
    /// step appears exactly once however often the run was killed.
    pub fn open(dir: &Path, last_step: Option<u64>) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        if path.exists() {
            let keep = last_step.unwrap_or(0);
            let reader = BufReader::new(File::open(&path).with_context(|| format!("reading {}", path.display()))?);
            let mut kept = String::new();
            for line in reader.lines() {
                let line = line?;
                // A torn last line (killed mid-write) does not parse and is dropped too.
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if v.get("step").and_then(|s| s.as_u64()).is_some_and(|s| s <= keep) {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog { path, file })
    }

    /// Appends the metrics of `step` as one line and makes it durable.
    pub fn append(&mut self, step: u64, metrics: &Metrics) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        for (k, v) in metrics {
            // JSON has no NaN or infinity: such values are written as null.
            obj.insert(k.clone(), serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into));
        }
        let line = serde_json::Value::Object(obj).to_string();
        writeln!(self.file, "{line}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.sync_data()?;
        Ok(())
    }
}

/// Reads every step's metrics from a run directory's `metrics.jsonl`.
pub fn read(dir: &Path) -> Result<Vec<(u64, Metrics)>> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for line in text.lines() {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else { continue };
        let Some(step) = obj.get("step").and_then(|s| s.as_u64()) else { continue };
        let m = obj.iter().filter(|(k, _)| *k != "step").filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x))).collect();
        rows.push((step, m));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_drops_later_steps_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for step in 1..=4 {
            log.append(step, &Metrics::from([("reward/mean".to_string(), step as f64)])).unwrap();
        }
        drop(log);
        let path = dir.path().join("metrics.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 5, \"rew");
        std::fs::write(&path, text).unwrap();
        let mut log = MetricsLog::open(dir.path(), Some(2)).unwrap();
        log.append(3, &Metrics::from([("reward/mean".to_string(), f64::NAN)])).unwrap();
        let rows = read(dir.path()).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!rows[2].1.contains_key("reward/mean"), "NaN is written as null");
    }
}
