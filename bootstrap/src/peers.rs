//! `lab-bootstrap peer add | remove | list`: the VPN peers of lab.toml, edited in place with
//! toml_edit (comments, order and layout kept), the whole lab validated as `validate` would
//! before the file is replaced atomically. lab.toml stays the one source of lab-bootstrap's
//! peers; `lab-vpn peer add` keeps its own apart (`peers_file`), and `plan` lists those.
//!
//! The edit does not apply: apply needs the Proxmox connection's options and asks before it
//! changes anything, so the command says to run it, and `plan` shows the change first.

use crate::model::{Lab, VpnPeer};
use crate::render::containers::vpn_config;
use crate::render::state::{write_peer_client, StateError};
use crate::state_dir::StateDir;
use lab_daemon::config::{parse, ConfigError};
use lab_daemon::Name;
use lab_schema::vpn::key::{PrivateKey, PublicKey};
use lab_schema::vpn::next_free_address;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// Why a peer command changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// lab.toml, as it is or as edited, is not a valid lab.
    #[error("{0}")]
    Config(ConfigError),
    /// The edited lab.toml would not be valid: nothing was written.
    #[error("the edited lab.toml would not be valid (nothing was written):\n{0}")]
    WouldBeInvalid(ConfigError),
    /// What was asked does not fit lab.toml (a name taken or unknown, no free address, peers
    /// not written as `[[vpn.peer]]` tables).
    #[error("{0}")]
    Refused(String),
    /// lab.toml or a file in the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The client config could not be made or written in the state directory.
    #[error("the client config: {0}")]
    State(#[from] StateError),
}

impl PeerError {
    /// Whether lab.toml (or the request) is at fault, rather than the system.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            PeerError::Config(_) | PeerError::WouldBeInvalid(_) | PeerError::Refused(_)
        )
    }
}

/// The peer's key, as `peer add` is given it.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `--public-key`.
    Key(PublicKey),
    /// `--public-key-file`, as named on the command line.
    File(PathBuf),
    /// Neither: a key pair is made, its private half kept for the client config.
    Generate,
}

/// What `peer add` did.
#[derive(Debug)]
pub struct Added {
    /// The peer's tunnel address.
    pub address: Ipv4Addr,
    /// Its client config in the state directory, written when the key pair was made here.
    pub client_config: Option<PathBuf>,
}

/// lab.toml as text, as a document to edit, and as a lab.
pub(crate) struct LabSource {
    path: PathBuf,
    pub(crate) document: DocumentMut,
    lab: Lab,
}

impl LabSource {
    pub(crate) fn read(path: &Path) -> Result<Self, PeerError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let lab = parse::<Lab>(path, &text).map_err(PeerError::Config)?;
        // Already parsed as TOML above, so this only fails if the two parsers disagree.
        let document = text
            .parse()
            .map_err(|e| PeerError::Refused(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            document,
            lab,
        })
    }

    /// `[[vpn.peer]]`, made when lab.toml has none.
    fn peers_mut(&mut self) -> Result<&mut ArrayOfTables, PeerError> {
        let vpn = self
            .document
            .entry("vpn")
            .or_insert_with(|| Item::Table(Table::new()));
        let refused = || {
            PeerError::Refused(
                "lab.toml's `vpn.peer` is not written as [[vpn.peer]] tables; edit it by hand"
                    .to_owned(),
            )
        };
        let vpn = vpn.as_table_like_mut().ok_or_else(refused)?;
        if vpn.get("peer").is_none() {
            vpn.insert("peer", Item::ArrayOfTables(ArrayOfTables::new()));
        }
        vpn.get_mut("peer")
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(refused)
    }

    /// The edited document as a lab, validated as `validate` would.
    pub(crate) fn validated(&self) -> Result<Lab, PeerError> {
        parse::<Lab>(&self.path, &self.document.to_string()).map_err(PeerError::WouldBeInvalid)
    }

    /// Validates the edited document as `validate` would, then replaces lab.toml with it,
    /// atomically and with its mode kept; returns the lab it now describes.
    pub(crate) fn replace(&self) -> Result<Lab, PeerError> {
        let lab = self.validated()?;
        let text = self.document.to_string();
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        lab_daemon::files::write_atomic(&self.path, text.as_bytes(), mode).map_err(|source| {
            PeerError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(lab)
    }
}

/// `file` as lab.toml should name it: relative to lab.toml's directory when it is below it
/// (lab.toml's paths are relative to it), else absolute.
fn as_named_from(lab_toml: &Path, file: &Path) -> Result<PathBuf, PeerError> {
    let absolute = std::path::absolute(file).map_err(|source| PeerError::Io {
        path: file.to_owned(),
        source,
    })?;
    let dir = lab_toml.parent().filter(|d| !d.as_os_str().is_empty());
    let dir =
        std::path::absolute(dir.unwrap_or(Path::new("."))).map_err(|source| PeerError::Io {
            path: lab_toml.to_owned(),
            source,
        })?;
    Ok(absolute
        .strip_prefix(&dir)
        .map(Path::to_path_buf)
        .unwrap_or(absolute))
}

/// Adds peer `name` to lab.toml at `address` (the tunnel's next free one when `None`). With
/// [`KeySource::Generate`], its client config, private key included, goes into `state`.
pub fn add(
    lab_toml: &Path,
    state: &StateDir,
    name: &str,
    key: &KeySource,
    address: Option<Ipv4Addr>,
) -> Result<Added, PeerError> {
    let mut source = LabSource::read(lab_toml)?;
    let name: Name = name
        .parse()
        .map_err(|e| PeerError::Refused(format!("peer name `{name}`: {e}")))?;
    if let Some(i) = source.lab.vpn.peers.iter().position(|p| p.name == name) {
        return Err(PeerError::Refused(format!(
            "a peer named `{name}` is already vpn.peer[{i}] in {}",
            lab_toml.display()
        )));
    }
    let address = match address {
        Some(address) => address,
        None => {
            let gateway =
                vpn_config(&source.lab).map_err(|e| PeerError::Refused(format!("vpn: {e}")))?;
            match next_free_address(&gateway).map(|net| net.addr()) {
                Some(IpAddr::V4(address)) => address,
                _ => {
                    return Err(PeerError::Refused(format!(
                        "no free address left in vpn.tunnel {}",
                        source.lab.vpn.tunnel
                    )))
                }
            }
        }
    };
    let private_key = matches!(key, KeySource::Generate).then(PrivateKey::generate);
    let mut peer = Table::new();
    peer["name"] = value(name.to_string());
    match (key, &private_key) {
        (KeySource::Key(public), _) => peer["public_key"] = value(public.to_string()),
        (KeySource::File(file), _) => {
            peer["public_key_file"] = value(as_named_from(lab_toml, file)?.display().to_string())
        }
        (KeySource::Generate, Some(private)) => {
            peer["public_key"] = value(private.public_key().to_string())
        }
        (KeySource::Generate, None) => {}
    }
    peer["address"] = value(address.to_string());
    source.peers_mut()?.push(peer);
    let lab = source.replace()?;
    let client_config = match &private_key {
        Some(private) => Some(write_peer_client(
            &lab,
            state,
            name.as_str(),
            address,
            Some(private),
        )?),
        None => None,
    };
    Ok(Added {
        address,
        client_config,
    })
}

/// Removes peer `name` from lab.toml, and its client config and kept private key from
/// `state`.
pub fn remove(lab_toml: &Path, state: &StateDir, name: &str) -> Result<(), PeerError> {
    let mut source = LabSource::read(lab_toml)?;
    let Some(index) = source
        .lab
        .vpn
        .peers
        .iter()
        .position(|p| p.name.as_str() == name)
    else {
        return Err(PeerError::Refused(format!(
            "no peer named `{name}` in {} (peers added with `lab-vpn peer add` are removed with `lab-vpn peer remove` in the vpn container)",
            lab_toml.display()
        )));
    };
    let peers = source.peers_mut()?;
    // The comments above a `[[vpn.peer]]` header are the section's more often than the peer's:
    // they stay, above the header that follows in the file.
    let removed = peers.remove(index);
    if peers.is_empty() {
        if let Some(vpn) = source
            .document
            .get_mut("vpn")
            .and_then(Item::as_table_like_mut)
        {
            vpn.remove("peer");
        }
    }
    let comments = removed
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_owned();
    let after = removed.position();
    match next_table(source.document.as_table_mut(), after) {
        Some(next) => {
            let own = next
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or_default()
                .trim_start_matches('\n')
                .to_owned();
            next.decor_mut().set_prefix(format!("{comments}{own}"));
        }
        None => {
            let trailing = source
                .document
                .trailing()
                .as_str()
                .unwrap_or_default()
                .to_owned();
            source
                .document
                .set_trailing(format!("{trailing}{comments}"));
        }
    }
    source.replace()?;
    for path in [state.vpn_client(name), state.vpn_client_key(name)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PeerError::Io { path, source: e })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The table (header) that comes first in the file after position `after`, among `table`'s
/// and those below it.
fn next_table(table: &mut Table, after: Option<isize>) -> Option<&mut Table> {
    fn walk<'a>(table: &'a mut Table, after: isize, best: &mut Option<&'a mut Table>) {
        let subtables = table.iter_mut().flat_map(|(_, item)| match item {
            Item::Table(sub) => vec![sub],
            Item::ArrayOfTables(array) => array.iter_mut().collect(),
            _ => Vec::new(),
        });
        for sub in subtables {
            match sub.position() {
                // A table's subtables come after it: it is the nearer.
                Some(p) if p > after => {
                    if best.as_ref().is_none_or(|b| b.position() > Some(p)) {
                        *best = Some(sub);
                    }
                }
                _ => walk(sub, after, best),
            }
        }
    }
    let mut best = None;
    walk(table, after?, &mut best);
    best
}

/// lab.toml's peers, in its order.
pub fn list(lab_toml: &Path) -> Result<Vec<VpnPeer>, PeerError> {
    Ok(LabSource::read(lab_toml)?.lab.vpn.peers)
}
