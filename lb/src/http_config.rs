//! `[listener.http]`: the types and their checks are lab-schema's; reading the certificate and
//! CA files they name is lab-lb's.

pub use lab_schema::lb::http::{CertPair, HttpListener, HttpRoute, UpstreamProtocol};
use lab_schema::Issues;

/// Loads every CA bundle and certificate pair `http` names, each problem under `key`.
pub fn check_files(http: &HttpListener, key: &str, issues: &mut Issues) {
    for (i, upstream) in http.upstreams.iter().enumerate() {
        if let Some(ca) = &upstream.ca {
            if let Err(e) = crate::tls::upstream::load_ca(ca) {
                issues.add(format!("{key}.upstream[{i}].ca"), e.to_string());
            }
        }
    }
    for (i, pair) in http.certs.iter().enumerate() {
        if let Err(e) = crate::tls::certs::load_pair(pair) {
            issues.add(format!("{key}.cert[{i}]"), e.to_string());
        }
    }
}
