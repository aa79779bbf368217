//! A fresh copy of a source tree for each run. `std::fs::copy` uses `copy_file_range`, which
//! reflinks on file systems that support it (btrfs, xfs) and copies in the kernel elsewhere.

use anyhow::{Context, Result};
use std::path::Path;

/// Copies `src` into `dst` (created), keeping symlinks as links. Returns the bytes copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<u64> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ft.is_dir() {
            bytes += copy_tree(&entry.path(), &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else if ft.is_file() {
            bytes += std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(bytes)
}
