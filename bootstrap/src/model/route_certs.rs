//! `[[lb.route.cert]]` as lab-lb will load it, checked before anything is pushed: lab-lb's own
//! file checks need pingora, which lab-bootstrap does not link, so the same rules are applied
//! here with rustls (the key must be the certificate's, as `CertifiedKey::from_der` decides for
//! lab-lb) and x509-parser, plus one lab-lb cannot make: the certificate served for each host
//! of the route's `http` rules, and for each of a pair's `names`, must name it, or every client
//! refuses the connection.

use super::LbRoute;
use lab_daemon::Issues;
use lab_schema::lb::ListenerMode;
use lab_schema::SniPattern;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// What lab-bootstrap learnt from a pair that lab-lb would load: the DNS names its leaf is
/// valid for.
struct LoadedPair {
    dns_names: Vec<String>,
}

/// A problem with a pair, and whether it is the `cert` or the `key` file's.
enum PairProblem {
    Cert(String),
    Key(String),
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn load(cert: &Path, key: &Path) -> Result<LoadedPair, PairProblem> {
    let cert_pem = read(cert).map_err(PairProblem::Cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PairProblem::Cert(format!("{}: not PEM certificates: {e}", cert.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(PairProblem::Cert(format!(
            "{} holds no CERTIFICATE block",
            cert.display()
        )));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        PairProblem::Cert(format!("{}: not an X.509 certificate: {e}", cert.display()))
    })?;
    let not_after = parsed.validity().not_after;
    if not_after.timestamp() < time::OffsetDateTime::now_utc().unix_timestamp() {
        return Err(PairProblem::Cert(format!(
            "{} expired at {not_after}",
            cert.display()
        )));
    }
    let dns_names = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(dns.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // The key's contents never appear in a message.
    let key_pem = read(key).map_err(PairProblem::Key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| PairProblem::Key(format!("{}: no PEM private key: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        PairProblem::Key(format!(
            "{} is not the key of {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(LoadedPair { dns_names })
}

/// Whether a certificate valid for `dns_names` is accepted by clients for every name `host`
/// (exact, or `*.suffix`) stands for. A certificate's wildcard covers one label, as clients
/// match it (RFC 6125).
fn covers(dns_names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    dns_names.iter().any(|san| {
        if *san == host {
            return true;
        }
        match (san.strip_prefix("*."), host.split_once('.')) {
            (Some(san_parent), Some((label, parent))) => {
                label != "*" && !label.is_empty() && parent == san_parent
            }
            _ => false,
        }
    })
}

/// Whether pair names `pattern` make lab-lb serve that pair for every name `host` stands for.
fn picks(pattern: &SniPattern, host: &SniPattern) -> bool {
    match (pattern, host) {
        (SniPattern::Exact(p), SniPattern::Exact(h)) => p == h,
        (SniPattern::Suffix(_), SniPattern::Exact(h)) => pattern.matches(h),
        (SniPattern::Suffix(p), SniPattern::Suffix(h)) => h.ends_with(p.as_str()),
        (SniPattern::Exact(_), SniPattern::Suffix(_)) => false,
    }
}

/// Checks the certificate files of `route` (lab.toml's `key`), loading them as lab-lb will.
/// Only an `https` route's: certificates on any other are refused by lb.toml's own rules.
pub(super) fn check(route: &LbRoute, key: &str, issues: &mut Issues) {
    if route.mode != ListenerMode::Https {
        return;
    }
    let mut loaded = Vec::new();
    for (k, pair) in route.certs.iter().enumerate() {
        let pair_key = format!("{key}.cert[{k}]");
        match load(&pair.cert, &pair.key) {
            Ok(names) => loaded.push((k, names)),
            Err(PairProblem::Cert(problem)) => issues.add(format!("{pair_key}.cert"), problem),
            Err(PairProblem::Key(problem)) => issues.add(format!("{pair_key}.key"), problem),
        }
    }
    // Coverage is only judged once every pair loaded: which one lab-lb serves depends on all.
    if loaded.len() != route.certs.len() {
        return;
    }
    for (k, pair) in loaded.iter().map(|(k, p)| (*k, p)) {
        for (n, name) in route.certs[k].names.iter().enumerate() {
            if SniPattern::parse(name).is_ok() && !covers(&pair.dns_names, name) {
                issues.add(
                    format!("{key}.cert[{k}].names[{n}]"),
                    format!(
                        "{} is not valid for `{name}` (it names {})",
                        route.certs[k].cert.display(),
                        shown(&pair.dns_names)
                    ),
                );
            }
        }
    }
    for (j, rule) in route.http.iter().enumerate() {
        let Some(host) = &rule.host else { continue };
        let Ok(pattern) = SniPattern::parse(host) else {
            continue;
        };
        let served = route
            .certs
            .iter()
            .position(|pair| {
                pair.names
                    .iter()
                    .filter_map(|n| SniPattern::parse(n).ok())
                    .any(|p| picks(&p, &pattern))
            })
            .unwrap_or(0);
        let Some((_, pair)) = loaded.iter().find(|(k, _)| *k == served) else {
            continue;
        };
        if !covers(&pair.dns_names, host) {
            issues.add(
                format!("{key}.http[{j}].host"),
                format!(
                    "the certificate served for `{host}`, {key}.cert[{served}] ({}), is not valid for it (it names {})",
                    route.certs[served].cert.display(),
                    shown(&pair.dns_names)
                ),
            );
        }
    }
}

fn shown(dns_names: &[String]) -> String {
    if dns_names.is_empty() {
        "no DNS name".to_owned()
    } else {
        dns_names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_wildcard_covers_one_label() {
        let names = ["*.apps.lab".to_owned(), "lab.example".to_owned()];
        assert!(covers(&names, "grafana.apps.lab"));
        assert!(covers(&names, "*.apps.lab"));
        assert!(covers(&names, "LAB.example"));
        assert!(!covers(&names, "a.b.apps.lab"));
        assert!(!covers(&names, "apps.lab"));
        assert!(!covers(&names, "*.lab"));
    }

    #[test]
    fn a_pair_is_served_for_the_hosts_its_names_take() {
        let parse = |s| SniPattern::parse(s).unwrap();
        assert!(picks(&parse("*.apps.lab"), &parse("a.apps.lab")));
        assert!(picks(&parse("*.apps.lab"), &parse("*.x.apps.lab")));
        assert!(!picks(&parse("a.apps.lab"), &parse("*.apps.lab")));
        assert!(!picks(&parse("*.apps.lab"), &parse("apps.lab")));
    }
}
