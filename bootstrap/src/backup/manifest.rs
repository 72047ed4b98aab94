//! What a backup archive holds and how it is laid out: the manifest (`manifest.json`), the
//! etcd snapshot, and the state directory's files under `state/`, each with its SHA-256.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// The manifest's name in the archive.
pub const MANIFEST: &str = "manifest.json";
/// The etcd snapshot's name in the archive.
pub const SNAPSHOT: &str = "etcd.snapshot";
/// The folder of the state directory's files in the archive.
pub const STATE: &str = "state";
/// The manifest format this lab-bootstrap writes and reads.
pub const FORMAT: u32 = 1;

/// `manifest.json`: which lab, from which Talos, and every file with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The lab's `cluster.name`.
    pub lab: String,
    /// When the backup was taken, UTC, as in the archive's name.
    pub created: String,
    /// The Talos release of the node the snapshot came from.
    pub talos_version: String,
    /// The etcd snapshot.
    pub snapshot: Snapshot,
    /// The state directory's files, by their path in the archive.
    pub files: Vec<FileSum>,
}

/// The etcd snapshot in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The control plane it came from.
    pub node: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// A file in the archive and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    /// Its path in the archive (`state/talosconfig`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// The SHA-256 (lowercase hex) and size of everything `reader` gives.
pub fn sha256(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0; 64 * 1024];
    let mut size = 0;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        context.update(&buffer[..read]);
        size += read as u64;
    }
    let hex = context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}
