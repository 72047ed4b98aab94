//! `peers_file`: the peers `lab-vpn peer add` keeps apart from vpn.toml, and what may not clash
//! between the two.

use super::{Peer, VpnConfig};
use crate::{ConfigFile, Issues};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The file vpn.toml's `peers_file` names: `[[peer]]` tables as in vpn.toml, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    /// `[[peer]]`.
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
}

impl ConfigFile for PeersFile {
    const WHAT: &'static str = "peers added with `lab-vpn peer add` ([[peer]] tables)";

    /// Its peers are only judged with the vpn.toml that names the file: [`Self::check_with`].
    fn validate(&self, _issues: &mut Issues) {}

    fn summary(&self) -> String {
        format!("{} added peers", self.peers.len())
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        for psk in self
            .peers
            .iter_mut()
            .filter_map(|p| p.preshared_key_file.as_mut())
        {
            if psk.is_relative() {
                *psk = dir.join(&*psk);
            }
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl PeersFile {
    /// The checks of these peers, keys relative to this file (`peer[0].name`): vpn.toml's own
    /// rules for peers among themselves and against `config`'s interface, then no name, key or
    /// address shared with a peer of `config` itself, whose file another tool may own.
    pub fn check_with(&self, config: &VpnConfig, issues: &mut Issues) {
        let alone = VpnConfig {
            peers: self.peers.clone(),
            ..config.clone()
        };
        alone.validate_peers(issues);
        for (i, peer) in self.peers.iter().enumerate() {
            let key = format!("peer[{i}]");
            for theirs in &config.peers {
                if theirs.name == peer.name {
                    issues.add(
                        format!("{key}.name"),
                        format!(
                            "peer `{}` is also vpn.toml's: rename or remove one of them",
                            peer.name
                        ),
                    );
                }
                if theirs.public_key == peer.public_key {
                    issues.add(
                        format!("{key}.public_key"),
                        format!("the same public key as vpn.toml's peer `{}`", theirs.name),
                    );
                }
                for (j, net) in peer.allowed_ips.iter().enumerate() {
                    if let Some(clash) = theirs.allowed_ips.iter().find(|o| overlaps(o, net)) {
                        issues.add(
                            format!("{key}.allowed_ips[{j}]"),
                            format!(
                                "{net} overlaps {clash} of vpn.toml's peer `{}`",
                                theirs.name
                            ),
                        );
                    }
                }
            }
        }
    }

    /// `config` with these peers after its own.
    pub fn merged_into(&self, config: &VpnConfig) -> VpnConfig {
        let mut merged = config.clone();
        merged.peers.extend(self.peers.iter().cloned());
        merged
    }
}
