//! The package list (`data/corpus/sources.tsv`), shared with scripts/fetch-corpus-sources.sh.

use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
    /// The sdist's file name in `<cache>/sdists/`.
    pub file: String,
    pub sha256: String,
    /// `train` or `test`: the corpus is split by package.
    pub split: String,
    /// The package inside the tree (a directory or a single module), relative to the tree.
    pub package_dir: String,
    pub pythonpath: Vec<String>,
    /// Files never mutated (generated tables, version stubs), relative to the tree.
    pub exclude: Vec<String>,
    /// Use this directory as the source instead of the sdist (for tests and local packages).
    pub local_dir: Option<String>,
}

pub fn read_sources(path: &Path) -> Result<Vec<PackageSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let list = |s: &str| -> Vec<String> {
        if s == "-" || s.is_empty() {
            Vec::new()
        } else {
            s.split(',').map(|x| x.trim().to_string()).collect()
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 8 {
            bail!(
                "{}:{}: expected 8 tab-separated columns, got {}",
                path.display(),
                i + 1,
                cols.len()
            );
        }
        out.push(PackageSpec {
            name: cols[0].into(),
            version: cols[1].into(),
            file: cols[2].into(),
            sha256: cols[3].into(),
            split: cols[4].into(),
            package_dir: cols[5].into(),
            pythonpath: list(cols[6]),
            exclude: list(cols[7]),
            local_dir: None,
        });
    }
    Ok(out)
}
