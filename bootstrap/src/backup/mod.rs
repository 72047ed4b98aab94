//! `lab-bootstrap backup` and `restore --dry-run`: an etcd snapshot through the Talos API and
//! the state directory in one archive (`<lab>-<UTC time>.tar.gz`, 0600, written atomically,
//! a manifest of checksums inside), the lab's oldest archives beyond `[backup] keep` removed
//! only once a new one is whole; and the check of an archive before a recovery.

pub mod manifest;
pub mod restore;

use crate::state_dir::private::private_dir;
use crate::state_dir::StateDir;
use crate::talos::cluster::{Access, ClusterError};
use crate::Lab;
use flate2::write::GzEncoder;
use manifest::{sha256, FileSum, Manifest, Snapshot, FORMAT, MANIFEST, SNAPSHOT, STATE};
use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The largest etcd snapshot taken: etcd's own default quota is 2 GiB and its largest
/// recommended 8 GiB; past that the stream is not an etcd database.
pub const MAX_SNAPSHOT: u64 = 8 << 30;

/// Why a backup was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The cluster gave no snapshot, or its credentials could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The new archive is in place, but an older one could not be removed.
    #[error("{} written, but removing the archives beyond `[backup] keep` failed: {source}", archive.display())]
    Prune {
        /// The new archive.
        archive: PathBuf,
        /// Why the removal failed.
        source: Box<BackupError>,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A backup taken.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The archive.
    pub archive: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The lab's older archives removed to keep `[backup] keep`.
    pub removed: Vec<PathBuf>,
}

/// The UTC time as archive names carry it, `20261201T171123Z`: sorts as time does.
fn timestamp(now: time::OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The archive name of lab `lab` at `stamp`.
fn archive_name(lab: &str, stamp: &str) -> String {
    format!("{lab}-{stamp}.tar.gz")
}

/// Whether `name` is an archive of lab `lab`: `<lab>-<timestamp>.tar.gz`, nothing else (a lab
/// `a` must not claim lab `a-b`'s archives).
fn is_archive_of(name: &str, lab: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(lab)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".tar.gz"))
    else {
        return false;
    };
    let bytes = stamp.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 15) || b.is_ascii_digit())
}

/// Every regular file of the state directory, by its path relative to it, sorted; half-written
/// temporary files (`.tmp-*`) left out.
fn state_files(state: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(relative) = dirs.pop() {
        let dir = state.join(&relative);
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let kind = entry.file_type().map_err(io_error(&entry.path()))?;
            let name = relative.join(entry.file_name());
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            if kind.is_dir() {
                dirs.push(name);
            } else if kind.is_file() {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Takes a backup of `lab` into `dir` (made 0700 if missing): the etcd snapshot from the first
/// control plane that gives one, the state directory's files, the manifest. Only once the
/// archive is whole and in place are the lab's archives beyond `keep` removed, oldest first.
pub fn take(
    lab: &Lab,
    state: &StateDir,
    access: &Access,
    dir: &Path,
    keep: u32,
) -> Result<Taken, BackupError> {
    let name = lab.cluster.name.to_string();
    private_dir(dir).map_err(io_error(dir))?;
    let snapshot_file = tempfile::Builder::new()
        .prefix(".tmp-snapshot-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    let taken = access.etcd_snapshot(snapshot_file.path(), MAX_SNAPSHOT)?;
    let (snapshot_sum, size) =
        sha256(File::open(snapshot_file.path()).map_err(io_error(snapshot_file.path()))?)
            .map_err(io_error(snapshot_file.path()))?;

    // Read once, so the bytes archived are the bytes summed, whatever writes the state
    // directory meanwhile (its files are small: keys, certificates, configs).
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for relative in state_files(state.path())? {
        let path = state.path().join(&relative);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let (sum, size) = sha256(bytes.as_slice()).map_err(io_error(&path))?;
        contents.push((relative.clone(), bytes));
        files.push(FileSum {
            path: format!("{STATE}/{}", relative.display()),
            size,
            sha256: sum,
        });
    }
    let created = timestamp(time::OffsetDateTime::now_utc());
    let manifest = Manifest {
        format: FORMAT,
        lab: name.clone(),
        created: created.clone(),
        talos_version: taken.talos_version,
        snapshot: Snapshot {
            node: taken.node,
            size,
            sha256: snapshot_sum,
        },
        files,
    };

    let archive = dir.join(archive_name(&name, &created));
    let mut out = tempfile::Builder::new()
        .prefix(".tmp-archive-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    write_archive(
        out.as_file_mut(),
        &manifest,
        snapshot_file.path(),
        &contents,
    )
    .map_err(io_error(&archive))?;
    out.as_file().sync_all().map_err(io_error(&archive))?;
    out.persist_noclobber(&archive)
        .map_err(|e| io_error(&archive)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    let removed = prune(dir, &name, keep).map_err(|source| BackupError::Prune {
        archive: archive.clone(),
        source: Box::new(source),
    })?;
    Ok(Taken {
        archive,
        manifest,
        removed,
    })
}

fn write_archive(
    out: &mut File,
    manifest: &Manifest,
    snapshot: &Path,
    files: &[(PathBuf, Vec<u8>)],
) -> io::Result<()> {
    let gzip = GzEncoder::new(BufWriter::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let text = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    tar.append_data(&mut private_header(text.len()), MANIFEST, text.as_slice())?;
    tar.append_path_with_name(snapshot, SNAPSHOT)?;
    for (relative, bytes) in files {
        tar.append_data(
            &mut private_header(bytes.len()),
            Path::new(STATE).join(relative),
            bytes.as_slice(),
        )?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// A regular file's header, 0600: unpacked, the secrets stay root's alone.
fn private_header(size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// The lab's archives in `dir`, oldest first.
pub fn archives(dir: &Path, lab: &str) -> Result<Vec<PathBuf>, BackupError> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(Result::ok)
        .filter(|e| is_archive_of(&e.file_name().to_string_lossy(), lab))
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// Removes lab `lab`'s archives in `dir` beyond the `keep` newest; returns them.
fn prune(dir: &Path, lab: &str, keep: u32) -> Result<Vec<PathBuf>, BackupError> {
    let all = archives(dir, lab)?;
    let excess = all.len().saturating_sub(keep as usize);
    let removed: Vec<PathBuf> = all.into_iter().take(excess).collect();
    for path in &removed {
        fs::remove_file(path).map_err(io_error(path))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_claimed_by_their_own_lab_only() {
        let name = archive_name("lab", "20261201T171123Z");
        assert_eq!(name, "lab-20261201T171123Z.tar.gz");
        assert!(is_archive_of(&name, "lab"));
        assert!(!is_archive_of("lab-b-20261201T171123Z.tar.gz", "lab"));
        assert!(!is_archive_of("lab-20261201T171123Z.tar.gz.bak", "lab"));
        assert!(!is_archive_of("lab-2026120xT171123Z.tar.gz", "lab"));
        assert!(is_archive_of("lab-b-20261201T171123Z.tar.gz", "lab-b"));
    }

    #[test]
    fn timestamps_sort_as_time_does() {
        let early = timestamp(time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        let late = timestamp(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
        assert_eq!(early, "20231114T221320Z");
        assert!(early < late);
    }
}
