//! `lb.toml`: the types and their checks are lab-schema's, so lab-bootstrap renders the same
//! types lab-lb loads. What is lab-lb's own: the limits a listener's accept loop enforces (and,
//! in [`crate::tls`], reading the certificate and CA files the config names).

pub use lab_schema::lb::{
    addresses_clash, http, Backend, BalanceAlgorithm, HealthCheck, HealthCheckKind, LbConfig,
    Listener, ListenerMode, ProxyProtocolVersion, Server, SniRoute,
};

/// The limits the accept loop of `listener` enforces.
pub fn admission_limits(listener: &Listener) -> lab_daemon::admission::Limits {
    lab_daemon::admission::Limits {
        total: listener.max_connections as usize,
        per_client: listener.max_connections_per_client as usize,
        exempt: listener.accept_proxy_from.clone(),
    }
}
