//! `lb.toml`: the types and their checks are lab-schema's, so lab-bootstrap renders the same
//! types lab-lb loads. What is lab-lb's own: reading the files the config names, and the
//! limits a listener's accept loop enforces.

pub use lab_schema::lb::{
    addresses_clash, Backend, BalanceAlgorithm, HealthCheck, HealthCheckKind, LbConfig, Listener,
    ListenerMode, ProxyProtocolVersion, Server, SniRoute,
};
use lab_schema::Issues;

/// The limits the accept loop of `listener` enforces.
pub fn admission_limits(listener: &Listener) -> lab_daemon::admission::Limits {
    lab_daemon::admission::Limits {
        total: listener.max_connections as usize,
        per_client: listener.max_connections_per_client as usize,
        exempt: listener.accept_proxy_from.clone(),
    }
}

/// The checks that read files: every certificate pair and CA bundle an `http` or `https`
/// listener names must load, as start and reload would load them.
pub fn check_files(config: &LbConfig, issues: &mut Issues) {
    for (i, listener) in config.listeners.iter().enumerate() {
        let l7 = matches!(listener.mode, ListenerMode::Http | ListenerMode::Https);
        if let (Some(http), true) = (&listener.http, l7) {
            crate::http_config::check_files(http, &format!("listener[{i}].http"), issues);
        }
    }
}
