//! `lb.toml` and `vpn.toml`, typed once: the types lab-lb and lab-vpn load, lab-bootstrap
//! renders, and every check of them that needs nothing but the file's own content.
//!
//! Nothing here reads files, opens sockets or touches the system: what a config names on disk
//! (certificates, keys) is read by the daemon that uses it, at `check`, start and reload.
//!
//! [`lb`] is `lb.toml`, [`vpn`] is `vpn.toml` with the WireGuard key types and the client
//! config a peer is handed; [`Issues`], [`Name`] and the shared sections are what both files
//! and `lab.toml` are built from.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config_file;
mod issues;
pub mod lb;
mod name;
mod sections;
mod sni_pattern;
pub mod vpn;

pub use config_file::{ConfigFile, DaemonConfig};
pub use issues::{Invalid, Issues};
pub use name::{Name, NameError, MAX_NAME_LEN};
pub use sections::{LogConfig, LogLevel, MetricsConfig, RuntimeConfig, ShutdownConfig};
pub use sni_pattern::SniPattern;

#[cfg(test)]
mod testing {
    use crate::{ConfigFile, Issues};

    /// What `validate` finds in `text`, each as `key `…`: message`; a file serde refuses is a
    /// test bug.
    pub fn problems<T: ConfigFile>(text: &str) -> Vec<String> {
        let config: T = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut issues = Issues::new();
        config.validate(&mut issues);
        issues.into_vec().iter().map(ToString::to_string).collect()
    }
}
