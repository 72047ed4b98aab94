//! `vpn.toml`: the types and their checks are lab-schema's, so lab-bootstrap renders the same
//! types lab-vpn loads. What lab-vpn adds is reading the `peers_file` vpn.toml names.

pub use lab_schema::vpn::{Interface, Peer, PeersFile, VpnConfig};

use lab_daemon::config::{locate_key, parse, ConfigError, ConfigErrorKind};
use lab_daemon::Issues;
use std::path::Path;

/// Reads, parses and checks vpn.toml at `path`, then its `peers_file`, whose peers follow its
/// own: as `check`, start, reload and the `peer` commands see the gateway's peers.
pub fn load(path: &Path) -> Result<VpnConfig, ConfigError> {
    let config = lab_daemon::config::load::<VpnConfig>(path)?;
    let Some(file) = &config.peers_file else {
        return Ok(config);
    };
    Ok(read_peers_file(file, &config)?.merged_into(&config))
}

/// The peers of `file`, which `config` names: none while the file does not exist; refused,
/// with the file's line and key, when they clash with `config`'s own or break its rules.
pub fn read_peers_file(file: &Path, config: &VpnConfig) -> Result<PeersFile, ConfigError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PeersFile::default()),
        Err(e) => {
            return Err(ConfigError {
                file: file.to_owned(),
                kind: ConfigErrorKind::Read(e),
            })
        }
    };
    parse_peers_file(file, &text, config)
}

/// [`read_peers_file`] of `text`, the file's contents (or what they are about to be).
pub fn parse_peers_file(
    file: &Path,
    text: &str,
    config: &VpnConfig,
) -> Result<PeersFile, ConfigError> {
    // `peer remove` may leave it empty: no peers, not a broken file.
    if text.trim().is_empty() {
        return Ok(PeersFile::default());
    }
    let peers = parse::<PeersFile>(file, text)?;
    let mut issues = Issues::new();
    peers.check_with(config, &mut issues);
    if issues.is_empty() {
        return Ok(peers);
    }
    Err(ConfigError {
        file: file.to_owned(),
        kind: ConfigErrorKind::Invalid(
            issues
                .into_vec()
                .into_iter()
                .map(|invalid| (locate_key(text, &invalid.key), invalid))
                .collect(),
        ),
    })
}
