//! `[[vpn.peer]]`: the WireGuard clients lab-vpn lets in, each at one tunnel address.

use super::Lab;
use lab_daemon::{Issues, Name};
use lab_schema::vpn::key::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// `[[vpn.peer]]`: one WireGuard client, its key and its tunnel address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnPeer {
    /// Unique among the peers: the peer's name in vpn.toml and its client config's in the
    /// state directory.
    pub name: Name,
    /// The peer's public key, or the file holding it (relative to lab.toml); exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// A file holding the peer's public key as `wg pubkey` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// The peer's address in `[vpn] tunnel`.
    pub address: Ipv4Addr,
}

/// Why a peer's key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PeerKeyError {
    /// Both or neither of `public_key` and `public_key_file` are given.
    #[error("give exactly one of `public_key` and `public_key_file`")]
    NotExactlyOne,
    /// `public_key_file` could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `public_key_file` holds something other than a public key.
    #[error("{file} does not hold a WireGuard public key: {reason}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
}

impl VpnPeer {
    /// The peer's public key: `public_key`, or the one read from `public_key_file`.
    pub fn key(&self) -> Result<PublicKey, PeerKeyError> {
        match (&self.public_key, &self.public_key_file) {
            (Some(key), None) => Ok(*key),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|source| PeerKeyError::Read {
                    file: file.clone(),
                    source,
                })?;
                text.trim().parse().map_err(|e| PeerKeyError::Parse {
                    file: file.clone(),
                    reason: format!("{e}"),
                })
            }
            _ => Err(PeerKeyError::NotExactlyOne),
        }
    }
}

impl Lab {
    /// lab-vpn's own address: the tunnel's first host.
    pub fn vpn_gateway(&self) -> Ipv4Addr {
        let tunnel = self.vpn.tunnel;
        tunnel.hosts().next().unwrap_or(tunnel.network())
    }

    pub(super) fn validate_peers(&self, issues: &mut Issues) {
        let tunnel = self.vpn.tunnel;
        let gateway = self.vpn_gateway();
        let mut names: HashMap<&Name, usize> = HashMap::new();
        let mut addresses: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut keys: HashMap<PublicKey, usize> = HashMap::new();
        for (i, peer) in self.vpn.peers.iter().enumerate() {
            let key = format!("vpn.peer[{i}]");
            if let Some(first) = names.insert(&peer.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!("peer `{}` is already vpn.peer[{first}]", peer.name),
                );
            }
            if let Some(problem) = super::usable_host_problem(&tunnel, peer.address) {
                issues.add(format!("{key}.address"), format!("{problem} (vpn.tunnel)"));
            } else if peer.address == gateway {
                issues.add(
                    format!("{key}.address"),
                    format!("{gateway} is lab-vpn's own tunnel address"),
                );
            }
            if let Some(first) = addresses.insert(peer.address, i) {
                issues.add(
                    format!("{key}.address"),
                    format!("{} is already vpn.peer[{first}]'s", peer.address),
                );
            }
            match peer.key() {
                Ok(public) => {
                    if let Some(first) = keys.insert(public, i) {
                        issues.add(
                            format!("{key}.public_key"),
                            format!("the same key as vpn.peer[{first}]"),
                        );
                    }
                }
                Err(PeerKeyError::NotExactlyOne) => {
                    issues.add(key, format!("{}", PeerKeyError::NotExactlyOne))
                }
                Err(e) => issues.add(format!("{key}.public_key_file"), format!("{e}")),
            }
        }
    }
}
