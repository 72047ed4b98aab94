//! Installing rendered files: atomically (lab_daemon's temp file + rename), with a `.bak` of a
//! replaced file that differs, and nothing touched when contents and mode are the same.

use super::RenderedFile;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// What writing one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// There was no file at the path.
    Created,
    /// Replaced; the old contents are in `<path>.bak`.
    Changed,
    /// Contents and mode were already right: nothing written.
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Created => "created",
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// Why a rendered file could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading, writing or backing up the file, or creating its directory, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path is not absolute, has a `.` or `..` in it, or has no parent directory.
    #[error("{}: not an absolute path without `..`", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The backup kept of a replaced file.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

/// Writes `contents` to `path` with `mode`, atomically; readers see the old file or the new one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<Outcome, WriteError> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path)(e)),
    };
    let same_mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777 == mode)
        .unwrap_or(false);
    if existing.as_deref() == Some(contents) && same_mode {
        return Ok(Outcome::Unchanged);
    }
    let dir = path
        .parent()
        .ok_or_else(|| WriteError::BadPath { path: path.into() })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if let Some(old) = &existing {
        if old.as_slice() != contents {
            let backup = backup_path(path);
            lab_daemon::files::write_atomic(&backup, old, mode).map_err(io(&backup))?;
        }
    }
    lab_daemon::files::write_atomic(path, contents, mode).map_err(io(path))?;
    Ok(match existing {
        None => Outcome::Created,
        Some(_) => Outcome::Changed,
    })
}

/// `path` (absolute, as on the host) under `root`.
pub fn under_root(root: &Path, path: &Path) -> Result<PathBuf, WriteError> {
    let bad = || WriteError::BadPath { path: path.into() };
    let mut out = root.to_path_buf();
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(bad());
    }
    for component in components {
        match component {
            Component::Normal(part) => out.push(part),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Writes every file under `root` at its host path; returns where each went and what happened.
pub fn write_tree(
    root: &Path,
    files: &[RenderedFile],
) -> Result<Vec<(PathBuf, Outcome)>, WriteError> {
    files
        .iter()
        .map(|file| {
            let target = under_root(root, &file.path)?;
            let outcome = write_atomic(&target, file.contents.as_bytes(), file.mode)?;
            Ok((target, outcome))
        })
        .collect()
}
