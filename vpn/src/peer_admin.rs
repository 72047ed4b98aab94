//! `lab-vpn peer add | remove | list`: managing admin peers in `vpn.toml`, or, when it names a
//! `peers_file`, in that file, which whoever writes vpn.toml (lab-bootstrap, from lab.toml)
//! leaves alone, so added peers survive its next rewrite. Edits keep the file's comments and layout (toml_edit), are validated as
//! the daemon would validate them before anything is written, are written atomically, and reach
//! a running daemon by the same reload `systemctl reload` does, confirmed on its control socket.

use crate::client_config::{ClientConfig, ClientPeer};
use crate::config::{parse_peers_file, PeersFile, VpnConfig};
use crate::key::{PrivateKey, PublicKey};
use crate::uapi_client::{Control, PeerStatus};
use ipnet::IpNet;
use lab_daemon::config::{parse, ConfigError};
use lab_daemon::Name;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a running daemon gets to show a change after the reload signal.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// Why `peer add`, `peer remove` or `peer list` failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// vpn.toml as it stands fails the daemon's own checks.
    #[error("{0}")]
    Config(ConfigError),
    /// vpn.toml could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be written: vpn.toml, a new preshared key or a client's config.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The request does not fit the file (a bad, taken or unknown peer name, no free address, no
    /// gateway endpoint, an unreadable gateway key, peers not as `[[peer]]`); holds why.
    #[error("{0}")]
    Refused(String),
    /// The edited vpn.toml would fail the daemon's checks, so nothing was written.
    #[error("the edited file would not be valid (nothing was written): {0}")]
    WouldBeInvalid(ConfigError),
    /// The client's config could not be drawn or saved as a QR code.
    #[error("{0}")]
    Qr(#[from] crate::qr::QrError),
    /// Talking to the running daemon on its control socket failed.
    #[error("cannot reach the running daemon: {0}")]
    Control(std::io::Error),
}

impl PeerError {
    /// Whether the configuration file itself is at fault (exit 78, as `check` would).
    pub fn is_config(&self) -> bool {
        matches!(self, PeerError::Config(_))
    }
}

/// What `peer add` is asked for.
#[derive(Debug, Default)]
pub struct AddRequest {
    /// The new peer's name; unique in the file.
    pub name: String,
    /// The peer's own public key; a key pair is generated when absent.
    pub public_key: Option<PublicKey>,
    /// The peer's tunnel address; the next free one when absent.
    pub address: Option<IpAddr>,
    /// Generate a preshared key for the peer (stored next to vpn.toml, 0600).
    pub preshared_key: bool,
    /// `Endpoint` for the client; the interface's `public_endpoint` when absent.
    pub endpoint: Option<String>,
    /// The client's `PersistentKeepalive`, seconds; 0 leaves it out.
    pub keepalive: u16,
}

/// What `peer add` did.
pub struct Added {
    /// The client's wg-quick config, with its private key when one was generated here.
    pub client: ClientConfig,
    /// Whether a running daemon now has the peer (None: no daemon running).
    pub live: Option<bool>,
}

/// The file as text and as the daemon reads it, and the peers file it names.
struct ConfigSource {
    path: PathBuf,
    text: String,
    /// vpn.toml alone, without the peers file's peers.
    config: VpnConfig,
    added: Option<PeersSource>,
}

/// The peers file as text and as read; empty while it does not exist.
struct PeersSource {
    path: PathBuf,
    text: String,
    peers: PeersFile,
}

impl ConfigSource {
    fn read(path: &Path) -> Result<Self, PeerError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeerError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = parse::<VpnConfig>(path, &text).map_err(PeerError::Config)?;
        let added = match &config.peers_file {
            Some(file) => Some(PeersSource::read(file, &config)?),
            None => None,
        };
        Ok(Self {
            path: path.to_owned(),
            text,
            config,
            added,
        })
    }

    /// Every peer, vpn.toml's and the peers file's: what the daemon loads.
    fn merged(&self) -> VpnConfig {
        match &self.added {
            Some(added) => added.peers.merged_into(&self.config),
            None => self.config.clone(),
        }
    }

    fn document(&self) -> Result<toml_edit::DocumentMut, PeerError> {
        // Already parsed as TOML above, so this only fails if the two parsers disagree.
        self.text
            .parse()
            .map_err(|e| PeerError::Refused(format!("{}: {e}", self.path.display())))
    }

    /// Validates `document` as the daemon would, then replaces the file with it, atomically and
    /// with the file's mode kept.
    fn replace(&self, document: &toml_edit::DocumentMut) -> Result<VpnConfig, PeerError> {
        let text = document.to_string();
        let config = parse::<VpnConfig>(&self.path, &text).map_err(PeerError::WouldBeInvalid)?;
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        lab_daemon::files::write_atomic(&self.path, text.as_bytes(), mode).map_err(|source| {
            PeerError::Write {
                path: self.path.display().to_string(),
                source,
            }
        })?;
        Ok(config)
    }
}

impl PeersSource {
    fn read(path: &Path, config: &VpnConfig) -> Result<Self, PeerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(PeerError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let peers = parse_peers_file(path, &text, config).map_err(PeerError::Config)?;
        Ok(Self {
            path: path.to_owned(),
            text,
            peers,
        })
    }

    fn document(&self) -> Result<toml_edit::DocumentMut, PeerError> {
        self.text
            .parse()
            .map_err(|e| PeerError::Refused(format!("{}: {e}", self.path.display())))
    }

    /// Checks `document` against vpn.toml's `config` as the daemon would, then replaces the
    /// file with it atomically; returns every peer, as the daemon will load them.
    fn replace(
        &self,
        document: &toml_edit::DocumentMut,
        config: &VpnConfig,
    ) -> Result<VpnConfig, PeerError> {
        let text = document.to_string();
        let peers =
            parse_peers_file(&self.path, &text, config).map_err(PeerError::WouldBeInvalid)?;
        // Public keys and addresses only, as in vpn.toml.
        lab_daemon::files::write_atomic(&self.path, text.as_bytes(), 0o644).map_err(|source| {
            PeerError::Write {
                path: self.path.display().to_string(),
                source,
            }
        })?;
        Ok(peers.merged_into(config))
    }
}

pub use lab_schema::vpn::next_free_address;

/// Adds a peer to the file and to a running daemon.
pub fn add(path: &Path, request: &AddRequest) -> Result<Added, PeerError> {
    let source = ConfigSource::read(path)?;
    let merged = source.merged();
    let config = &merged;
    let name: Name = request
        .name
        .parse()
        .map_err(|e| PeerError::Refused(format!("peer name `{}`: {e}", request.name)))?;
    if config.peers.iter().any(|p| p.name == name) {
        return Err(PeerError::Refused(format!(
            "a peer named `{name}` already exists in {}{}",
            path.display(),
            source
                .added
                .as_ref()
                .map(|a| format!(" or {}", a.path.display()))
                .unwrap_or_default()
        )));
    }
    let address = match request.address {
        Some(address) => IpNet::new(address, if address.is_ipv4() { 32 } else { 128 })
            .map_err(|e| PeerError::Refused(e.to_string()))?,
        None => next_free_address(config).ok_or_else(|| {
            PeerError::Refused("no free address left in the tunnel network".to_owned())
        })?,
    };
    let (private_key, public_key) = match request.public_key {
        Some(key) => (None, key),
        None => {
            let key = PrivateKey::generate();
            let public = key.public_key();
            (Some(key), public)
        }
    };
    let gateway_key = PrivateKey::from_bytes(
        crate::key::read_key_file(&config.interface.private_key_file)
            .map_err(|e| PeerError::Refused(format!("the gateway's private key: {e}")))?,
    )
    .public_key();
    // Before anything is written: adding a peer leaves the interface, all the client's config
    // depends on, as it is.
    let mut client = ClientConfig::for_peer(
        config,
        gateway_key,
        ClientPeer {
            name: name.to_string(),
            address,
            private_key,
            preshared_key: None,
        },
        request.endpoint.clone(),
        (request.keepalive > 0).then_some(request.keepalive),
    )
    .map_err(|_| {
        PeerError::Refused(
            "clients need the gateway's address: set interface.public_endpoint in the config, or pass --endpoint HOST:PORT".to_owned(),
        )
    })?;

    let mut peer = toml_edit::Table::new();
    peer["name"] = toml_edit::value(name.to_string());
    peer["public_key"] = toml_edit::value(public_key.to_string());
    let preshared_key = if request.preshared_key {
        let mut psk = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk);
        let psk_path = psk_file(path, &name);
        write_new_secret(&psk_path, &psk)?;
        peer["preshared_key_file"] = toml_edit::value(psk_path.display().to_string());
        Some(psk)
    } else {
        None
    };
    let mut allowed = toml_edit::Array::new();
    allowed.push(address.to_string());
    peer["allowed_ips"] = toml_edit::value(allowed);
    let written = match &source.added {
        Some(added) => {
            let mut document = added.document()?;
            append_peer(&mut document, peer)?;
            added.replace(&document, &source.config)
        }
        None => {
            let mut document = source.document()?;
            append_peer(&mut document, peer)?;
            source.replace(&document)
        }
    };
    if let (Err(_), true) = (&written, preshared_key.is_some()) {
        // Nothing refers to it: do not leave a secret lying about.
        let _ = std::fs::remove_file(psk_file(path, &name));
    }
    let written = written?;

    let live = apply_live(&written, |peers| {
        peers.iter().any(|p| p.public_key == Some(public_key))
    })?;
    client.preshared_key = preshared_key;
    Ok(Added { client, live })
}

fn psk_file(config_path: &Path, name: &Name) -> PathBuf {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    dir.join(format!("{name}.psk"))
}

/// Creates `path` 0600 with the key in `wg genpsk` form; an existing file is never overwritten.
fn write_new_secret(path: &Path, key: &[u8; 32]) -> Result<(), PeerError> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| PeerError::Write {
            path: shown.clone(),
            source,
        })?;
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| PeerError::Write {
            path: shown,
            source,
        })
}

fn append_peer(
    document: &mut toml_edit::DocumentMut,
    peer: toml_edit::Table,
) -> Result<(), PeerError> {
    let item = document
        .entry("peer")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ));
    match item.as_array_of_tables_mut() {
        Some(peers) => {
            peers.push(peer);
            Ok(())
        }
        None => Err(PeerError::Refused(
            "`peer` in the config is not written as [[peer]] tables; edit it by hand".to_owned(),
        )),
    }
}

/// Removes peer `name` from the file (the peers file, when vpn.toml names one) and from a
/// running daemon.
pub fn remove(path: &Path, name: &str) -> Result<Option<bool>, PeerError> {
    let source = ConfigSource::read(path)?;
    let position =
        |peers: &[crate::config::Peer]| peers.iter().position(|p| p.name.as_str() == name);
    let in_added = source
        .added
        .as_ref()
        .and_then(|added| Some((added, position(&added.peers.peers)?)));
    let written = match (in_added, &source.added, position(&source.config.peers)) {
        (Some((added, index)), _, _) => {
            let public_key = added.peers.peers[index].public_key;
            let mut document = added.document()?;
            remove_peer(&mut document, index)?;
            (added.replace(&document, &source.config)?, public_key)
        }
        (None, Some(added), Some(_)) => {
            return Err(PeerError::Refused(format!(
                "peer `{name}` is one of {}'s own, which is rewritten by the tool that wrote it \
                 (lab-bootstrap, from lab.toml: `lab-bootstrap peer remove {name}`, then apply); \
                 `peer remove` removes the peers of {} only",
                path.display(),
                added.path.display()
            )))
        }
        (None, None, Some(index)) => {
            let public_key = source.config.peers[index].public_key;
            let mut document = source.document()?;
            remove_peer(&mut document, index)?;
            (source.replace(&document)?, public_key)
        }
        (None, _, None) => {
            return Err(PeerError::Refused(format!(
                "no peer named `{name}` in {}{}",
                path.display(),
                source
                    .added
                    .as_ref()
                    .map(|a| format!(" or {}", a.path.display()))
                    .unwrap_or_default()
            )))
        }
    };
    let (config, public_key) = written;
    apply_live(&config, |peers| {
        !peers.iter().any(|p| p.public_key == Some(public_key))
    })
}

/// Takes `[[peer]]` table `index` out of `document`, and the key with the last one.
fn remove_peer(document: &mut toml_edit::DocumentMut, index: usize) -> Result<(), PeerError> {
    let peers = document
        .get_mut("peer")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            PeerError::Refused(
                "`peer` in the config is not written as [[peer]] tables; edit it by hand"
                    .to_owned(),
            )
        })?;
    peers.remove(index);
    if peers.is_empty() {
        document.remove("peer");
    }
    Ok(())
}

/// Signals a running daemon to reload, as `systemctl reload` would, and waits until its control
/// socket shows `done`. `None` when no daemon runs for the interface; `Some(false)` when it did
/// not take the change in time (a refused reload: its log says why).
fn apply_live(
    config: &VpnConfig,
    done: impl Fn(&[PeerStatus]) -> bool,
) -> Result<Option<bool>, PeerError> {
    let interface = &config.interface.name;
    let Some(control) = Control::connect(interface).map_err(PeerError::Control)? else {
        return Ok(None);
    };
    let pid = control.server_pid().map_err(PeerError::Control)?;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .map_err(|e| PeerError::Control(e.into()))?;
    let deadline = Instant::now() + RELOAD_WAIT;
    while Instant::now() < deadline {
        if let Some(mut control) = Control::connect(interface).map_err(PeerError::Control)? {
            if done(&control.peers().map_err(PeerError::Control)?) {
                return Ok(Some(true));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Some(false))
}

/// One line of `peer list`.
pub struct Listed {
    /// The peer's name; for one only the daemon has, `(not in file)` and its key.
    pub name: String,
    /// Its allowed IPs: the file's, or the daemon's for a peer not in the file.
    pub allowed_ips: Vec<IpNet>,
    /// `None` when the daemon is not running.
    pub status: Option<PeerStatus>,
}

/// The configured peers with what the running daemon knows of them, then any peer the daemon
/// has that the file does not (added with `wg set`), named by its key.
pub fn list(path: &Path) -> Result<(Vec<Listed>, bool), PeerError> {
    let source = ConfigSource::read(path)?.merged();
    let live = match Control::connect(&source.interface.name).map_err(PeerError::Control)? {
        Some(mut control) => Some(control.peers().map_err(PeerError::Control)?),
        None => None,
    };
    let mut listed: Vec<Listed> = source
        .peers
        .iter()
        .map(|peer| Listed {
            name: peer.name.to_string(),
            allowed_ips: peer.allowed_ips.clone(),
            status: live.as_ref().map(|statuses| {
                statuses
                    .iter()
                    .find(|s| s.public_key == Some(peer.public_key))
                    .cloned()
                    .unwrap_or_default()
            }),
        })
        .collect();
    for status in live.iter().flatten() {
        let known = source
            .peers
            .iter()
            .any(|p| Some(p.public_key) == status.public_key);
        if !known {
            listed.push(Listed {
                name: status
                    .public_key
                    .map_or_else(|| "?".to_owned(), |k| format!("(not in file) {k}")),
                allowed_ips: status.allowed_ips.clone(),
                status: Some(status.clone()),
            });
        }
    }
    Ok((listed, live.is_some()))
}

/// "3 minutes, 2 seconds ago" in `wg show`'s manner, or "never".
pub fn ago(when: Option<SystemTime>) -> String {
    let Some(elapsed) = when.and_then(|t| SystemTime::now().duration_since(t).ok()) else {
        return "never".to_owned();
    };
    let seconds = elapsed.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let parts: Vec<String> = [(h, "hour"), (m, "minute"), (s, "second")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "now".to_owned()
    } else {
        format!("{} ago", parts.join(", "))
    }
}

/// Bytes as `wg show` prints transfer: B, KiB, MiB, GiB.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_ages_read_like_wg_show() {
        assert_eq!(ago(None), "never");
        let then = SystemTime::now() - Duration::from_secs(62);
        assert_eq!(ago(Some(then)), "1 minute, 2 seconds ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.50 MiB");
    }
}
