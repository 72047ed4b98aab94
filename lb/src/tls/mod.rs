//! TLS: listeners' certificates chosen by SNI, the server side stream, and the client side to
//! upstream servers.

pub(crate) mod certs;
pub mod fuzzing;
mod random;
pub(crate) mod stream;
pub(crate) mod upstream;

use crate::config::{http::HttpListener, LbConfig, ListenerMode};
use lab_schema::Issues;

/// The checks that read files: every certificate pair and CA bundle an `http` or `https`
/// listener names must load, as start and reload would load them.
pub fn check_files(config: &LbConfig, issues: &mut Issues) {
    for (i, listener) in config.listeners.iter().enumerate() {
        let l7 = matches!(listener.mode, ListenerMode::Http | ListenerMode::Https);
        if let (Some(http), true) = (&listener.http, l7) {
            check_listener_files(http, &format!("listener[{i}].http"), issues);
        }
    }
}

/// Loads every CA bundle and certificate pair `http` names, each problem under `key`.
fn check_listener_files(http: &HttpListener, key: &str, issues: &mut Issues) {
    for (i, upstream) in http.upstreams.iter().enumerate() {
        if let Some(ca) = &upstream.ca {
            if let Err(e) = upstream::load_ca(ca) {
                issues.add(format!("{key}.upstream[{i}].ca"), e.to_string());
            }
        }
    }
    for (i, pair) in http.certs.iter().enumerate() {
        if let Err(e) = certs::load_pair(pair) {
            issues.add(format!("{key}.cert[{i}]"), e.to_string());
        }
    }
}
