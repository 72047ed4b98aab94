//! `restore --dry-run`: an archive checked before anyone recovers from it — the manifest's
//! checksums against every file, the snapshot read whole, the archive of this lab and of the
//! same cluster (cluster ID and CAs) as the state directory — and the steps of a recovery.

use super::manifest::{sha256, Manifest, FORMAT, MANIFEST, SNAPSHOT, STATE};
use crate::state_dir::StateDir;
use crate::talos::Secrets;
use crate::Lab;
use flate2::read::GzDecoder;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest manifest or secrets file read into memory.
const MAX_SMALL: u64 = 1 << 20;

/// Why an archive is not one to recover from.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive could not be opened or read whole.
    #[error("{archive}: cannot read it: {source}")]
    Read {
        /// The archive.
        archive: String,
        /// The underlying error.
        source: io::Error,
    },
    /// What in the archive is wrong, by file.
    #[error("{archive}: {problem}")]
    Refused {
        /// The archive.
        archive: String,
        /// What is wrong, naming the file in the archive.
        problem: String,
    },
}

/// What the check found in a good archive.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Its manifest.
    pub manifest: Manifest,
    /// Whether the state directory holds the same cluster's secrets (false: it has none).
    pub state_matches: bool,
}

/// Checks `archive` for `lab`, whose state directory is `state`.
pub fn check(archive: &Path, lab: &Lab, state: &StateDir) -> Result<Checked, RestoreError> {
    let shown = archive.display().to_string();
    let read = |source| RestoreError::Read {
        archive: shown.clone(),
        source,
    };
    let refuse = |problem: String| RestoreError::Refused {
        archive: shown.clone(),
        problem,
    };
    let file = File::open(archive).map_err(read)?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    let mut manifest_text = None;
    let mut secrets_text = None;
    let mut sums: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for entry in tar.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let path = entry.path().map_err(read)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_owned();
        // Directories carry nothing to check (tar adds them when an archive is repacked); a
        // link or device would be a way out of the directory it is unpacked into.
        if entry.header().entry_type() == tar::EntryType::Directory {
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(format!("`{path}` is not a regular file")));
        }
        if path == MANIFEST || path == format!("{STATE}/talos-secrets.yaml") {
            if entry.size() > MAX_SMALL {
                return Err(refuse(format!("`{path}` is larger than {MAX_SMALL} bytes")));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(read)?;
            let sum = sha256(text.as_slice()).map_err(read)?;
            if path == MANIFEST {
                manifest_text = Some(text);
            } else {
                secrets_text = Some(text);
                sums.insert(path, sum);
            }
            continue;
        }
        let sum = sha256(&mut entry).map_err(read)?;
        if sums.insert(path.clone(), sum).is_some() {
            return Err(refuse(format!("`{path}` is in it twice")));
        }
    }
    let manifest: Manifest = serde_json::from_slice(
        &manifest_text
            .ok_or_else(|| refuse(format!("no `{MANIFEST}`: not a lab-bootstrap backup")))?,
    )
    .map_err(|e| refuse(format!("`{MANIFEST}`: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!(
            "`{MANIFEST}`: format {} (this lab-bootstrap reads {FORMAT})",
            manifest.format
        )));
    }
    let name = lab.cluster.name.to_string();
    if manifest.lab != name {
        return Err(refuse(format!(
            "it is a backup of lab `{}`, not of `{name}` (cluster.name)",
            manifest.lab
        )));
    }

    let snapshot = sums
        .remove(SNAPSHOT)
        .ok_or_else(|| refuse(format!("no `{SNAPSHOT}`")))?;
    if snapshot.1 == 0 || snapshot.1 != manifest.snapshot.size {
        return Err(refuse(format!(
            "`{SNAPSHOT}` has {} bytes, the manifest says {}",
            snapshot.1, manifest.snapshot.size
        )));
    }
    if snapshot.0 != manifest.snapshot.sha256 {
        return Err(refuse(format!(
            "`{SNAPSHOT}`: sha256 {} is not the manifest's {}: the snapshot was changed or damaged",
            snapshot.0, manifest.snapshot.sha256
        )));
    }
    for listed in &manifest.files {
        match sums.remove(&listed.path) {
            None => {
                return Err(refuse(format!(
                    "`{}` is in the manifest but not in the archive",
                    listed.path
                )))
            }
            Some((sum, size)) if sum != listed.sha256 || size != listed.size => {
                return Err(refuse(format!(
                    "`{}`: sha256 {sum} is not the manifest's {}: the file was changed or damaged",
                    listed.path, listed.sha256
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = sums.keys().next() {
        return Err(refuse(format!("`{extra}` is not in the manifest")));
    }

    let archived: Secrets = serde_norway::from_slice(
        &secrets_text.ok_or_else(|| refuse(format!("no `{STATE}/talos-secrets.yaml`")))?,
    )
    .map_err(|e| refuse(format!("`{STATE}/talos-secrets.yaml`: {e}")))?;
    let state_matches = match state.talos_secrets().exists() {
        false => false,
        true => {
            let ours = Secrets::load(&state.talos_secrets()).map_err(|e| refuse(e.to_string()))?;
            let same = ours.cluster.id == archived.cluster.id
                && ours.certs.os.crt == archived.certs.os.crt
                && ours.certs.k8s.crt == archived.certs.k8s.crt
                && ours.certs.etcd.crt == archived.certs.etcd.crt;
            if !same {
                return Err(refuse(format!(
                    "its `{STATE}/talos-secrets.yaml` is of another cluster (cluster ID or CAs differ from {}): recovering from it would lock out the state directory's talosconfig",
                    state.talos_secrets().display()
                )));
            }
            true
        }
    };
    Ok(Checked {
        manifest,
        state_matches,
    })
}

/// The recovery, step by step, as a user runs it.
pub fn steps(
    checked: &Checked,
    archive: &Path,
    lab: &Lab,
    lab_file: &Path,
    state: &StateDir,
) -> String {
    let (archive, lab_file, state_dir) = (
        archive.display(),
        lab_file.display(),
        state.path().display(),
    );
    let first = lab
        .machines
        .iter()
        .filter(|m| m.role == crate::model::Role::ControlPlane)
        .find_map(|m| m.address_on(crate::model::NetworkId::Net1))
        .map_or_else(|| "<first control plane>".to_owned(), |a| a.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "archive {archive}: lab `{}`, taken {} from {} (Talos {}); {} state files and the etcd snapshot ({} bytes, sha256 {}) match the manifest",
        checked.manifest.lab,
        checked.manifest.created,
        checked.manifest.snapshot.node,
        checked.manifest.talos_version,
        checked.manifest.files.len(),
        checked.manifest.snapshot.size,
        checked.manifest.snapshot.sha256,
    );
    if checked.state_matches {
        let _ = writeln!(
            out,
            "the state directory {state_dir} holds the same cluster's secrets"
        );
    } else {
        let _ = writeln!(
            out,
            "the state directory {state_dir} holds no Talos secrets yet"
        );
    }
    let _ = writeln!(out, "to recover:");
    let restore_state = if checked.state_matches {
        format!("  1. the state directory is this cluster's already (to take the archive's copy anyway: tar -xzf {archive} --strip-components=1 -C {state_dir} {STATE})")
    } else {
        format!("  1. restore the state directory: install -d -m 0700 {state_dir} && tar -xzf {archive} --strip-components=1 -C {state_dir} {STATE}")
    };
    let _ = writeln!(out, "{restore_state}");
    let _ = writeln!(out, "  2. make the machines again without bootstrapping etcd: lab-bootstrap apply --no-wait {lab_file}");
    let _ = writeln!(out, "  3. take the snapshot out: tar -xzf {archive} {SNAPSHOT} && echo '{}  {SNAPSHOT}' | sha256sum -c", checked.manifest.snapshot.sha256);
    let _ = writeln!(out, "  4. recover etcd on the first control plane: talosctl --talosconfig {state_dir}/talosconfig -n {first} bootstrap --recover-from=./{SNAPSHOT}");
    let _ = writeln!(
        out,
        "  5. wait for the cluster and fetch the kubeconfig: lab-bootstrap apply {lab_file}"
    );
    out
}
