//! What the grader puts on disk outside the sandbox: source distributions unpacked into the
//! cache, the shims the agent's shell finds on its PATH, and permissions an unprivileged sandbox
//! user can read.

use super::task::Source;
use super::grader::nonce;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Writes `python` (the sandbox's interpreter, when it is not itself called `python`) and
/// `pytest` as small shell scripts into `dir`.
pub(super) fn stage_tools_bin(dir: &Path, python: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut scripts = vec![(
        "pytest",
        format!("#!/bin/sh\nexec '{python}' -m pytest \"$@\"\n"),
    )];
    if Path::new(python).file_name().is_none_or(|n| n != "python") {
        scripts.push(("python", format!("#!/bin/sh\nexec '{python}' \"$@\"\n")));
    }
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        set_mode(&path, 0o755)?;
    }
    set_mode(dir, 0o755)
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Every ancestor is traversable by others and the directory itself readable.
pub(super) fn world_readable_path(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(abs) = std::fs::canonicalize(path) else {
        return false;
    };
    let mut cur = Some(abs.as_path());
    let mut first = true;
    while let Some(p) = cur {
        let Ok(md) = std::fs::metadata(p) else {
            return false;
        };
        let need = if first { 0o005 } else { 0o001 };
        if md.permissions().mode() & need != need {
            return false;
        }
        first = false;
        cur = p.parent();
    }
    true
}

pub(super) fn make_world_readable(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            make_world_readable(&entry.path())?;
        } else if ft.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            set_mode(&entry.path(), mode | 0o444)?;
        }
    }
    let mode = std::fs::metadata(root)?.permissions().mode();
    set_mode(root, mode | 0o555)
}

/// Unpacks a source into `<cache>/trees/` once (across processes: unpack, then rename).
pub(super) fn unpack_source(cache: &Path, source: &Source) -> Result<PathBuf> {
    match source {
        Source::Dir { path } => {
            let p = PathBuf::from(path);
            if !p.is_dir() {
                bail!("source directory {} does not exist", p.display());
            }
            Ok(p)
        }
        Source::Sdist {
            name,
            version,
            file,
            sha256,
        } => {
            let dest = cache.join("trees").join(format!(
                "{name}-{version}-{}",
                &sha256[..sha256.len().min(12)]
            ));
            if dest.join(".atomrl-complete").exists() {
                return Ok(dest);
            }
            let archive = cache.join("sdists").join(file);
            let bytes = std::fs::read(&archive).with_context(|| {
                format!(
                    "source distribution {} is missing: run scripts/fetch-corpus-sources.sh (or set ATOMRL_CACHE)",
                    archive.display()
                )
            })?;
            let got = hex(&Sha256::digest(&bytes));
            if &got != sha256 {
                bail!("{} has sha256 {got}, expected {sha256}", archive.display());
            }
            let tmp = cache
                .join("trees")
                .join(format!(".tmp-{}-{}", std::process::id(), nonce()));
            std::fs::create_dir_all(&tmp)?;
            let result = (|| -> Result<()> {
                let gz = flate2::read::GzDecoder::new(&bytes[..]);
                let mut ar = tar::Archive::new(gz);
                ar.set_preserve_permissions(false);
                ar.unpack(&tmp)
                    .with_context(|| format!("unpacking {}", archive.display()))?;
                let entries: Vec<_> = std::fs::read_dir(&tmp)?.collect::<std::io::Result<_>>()?;
                let top = match entries.as_slice() {
                    [one] if one.file_type()?.is_dir() => one.path(),
                    _ => tmp.clone(),
                };
                make_world_readable(&top)?;
                std::fs::write(top.join(".atomrl-complete"), "")?;
                match std::fs::rename(&top, &dest) {
                    Ok(()) => Ok(()),
                    Err(_) if dest.join(".atomrl-complete").exists() => Ok(()), // another process won
                    Err(e) => {
                        Err(e).with_context(|| format!("moving the tree to {}", dest.display()))
                    }
                }
            })();
            let _ = std::fs::remove_dir_all(&tmp);
            result?;
            Ok(dest)
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
