//! The files apply wrote on the host, with the SHA-256 of what it wrote, kept in the state
//! directory: destroy removes a file only while it still holds exactly that, so a file edited
//! by hand since is never lost.

use crate::state_dir::StateDir;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why the manifest could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading, writing or removing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The manifest, in the state directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a SHA-256 in hex, two spaces and an absolute path.
    #[error("{}: line {line}: expected `SHA256  /absolute/path`", path.display())]
    Parse {
        /// The manifest, in the state directory.
        path: PathBuf,
        /// The line's number, counting from 1.
        line: usize,
    },
}

/// Host path (absolute, as on the host) → SHA-256 (hex) of what lab-bootstrap wrote there.
pub type Manifest = BTreeMap<PathBuf, String>;

/// The SHA-256 of `bytes` in lowercase hex, as the manifest and `sha256sum` write it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest in `state`; none yet is an empty one.
pub fn load(state: &StateDir) -> Result<Manifest, ManifestError> {
    let path = state.written_files();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::new()),
        Err(source) => return Err(ManifestError::Io { path, source }),
    };
    let mut out = Manifest::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .split_once("  ")
            .filter(|(sum, file)| sum.len() == 64 && file.starts_with('/'));
        let Some((sum, file)) = parsed else {
            return Err(ManifestError::Parse {
                path: path.clone(),
                line: n + 1,
            });
        };
        out.insert(PathBuf::from(file), sum.to_owned());
    }
    Ok(out)
}

/// Saves `manifest` (0600); an empty one removes the file.
pub fn save(state: &StateDir, manifest: &Manifest) -> Result<(), ManifestError> {
    let path = state.written_files();
    let io = |source| ManifestError::Io {
        path: path.clone(),
        source,
    };
    if manifest.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    let text: String = manifest
        .iter()
        .map(|(file, sum)| format!("{sum}  {}\n", file.display()))
        .collect();
    lab_daemon::files::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
}
