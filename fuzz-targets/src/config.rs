//! The config loaders: `lb.toml` and `vpn.toml` as the daemons load them (parse, then
//! validate; `lab-lb check` and `lab-vpn check` do the same), `lab.toml` as lab-bootstrap does.
//! A file is refused with messages that name it; a file that is accepted writes out (as
//! lab-bootstrap writes the daemons' files) to one that is accepted again, and a `lab.toml`
//! that is accepted renders `lb.toml` and `vpn.toml` the daemons accept.

use lab_daemon::config::{parse, parse_checked, ConfigFile, Issues};
use serde::Serialize;
use std::path::Path;

const LB: &str = "/etc/lab-lb/lb.toml";
const VPN: &str = "/etc/lab-vpn/vpn.toml";
const LAB: &str = "/etc/lab/lab.toml";

/// lab-lb's checks read the files a config names (certificates, CA bundles): a fuzzer that
/// wrote `/dev/zero` or `/dev/stdin` there would hang the run, not find a bug.
fn names_special_files(source: &str) -> bool {
    ["dev/", "proc/", "sys/"].iter().any(|d| source.contains(d))
}

/// Parses and validates `data` as a `T` in `path`, then runs the daemon's `check_files`:
/// refused with every message naming the file, or accepted.
fn load<T: ConfigFile>(
    data: &[u8],
    path: &str,
    check_files: impl FnOnce(&T, &mut Issues),
) -> Option<T> {
    let source = std::str::from_utf8(data).ok()?;
    if names_special_files(source) {
        return None;
    }
    match parse_checked::<T>(Path::new(path), source, check_files) {
        Ok(config) => {
            let _ = config.summary();
            Some(config)
        }
        Err(e) => {
            let lines = e.lines();
            assert!(!lines.is_empty());
            for line in lines {
                assert!(line.starts_with(path), "{line}");
            }
            None
        }
    }
}

/// `config` written out as TOML is a `T` that is accepted again.
fn written_again<T: ConfigFile + Serialize>(config: &T, path: &str) {
    let text = match toml::to_string(config) {
        Ok(text) => text,
        Err(e) => panic!("an accepted config does not write out: {e}"),
    };
    if let Err(e) = parse::<T>(Path::new(path), &text) {
        panic!("an accepted config, written out, is refused: {e}\n{text}");
    }
}

/// Fields the proxy writes itself on every message: the framing and the hop-by-hop fields.
/// Written out here rather than taken from lab-schema, so that the target checks its list too.
const PROXYS_OWN: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Besides loading: no accepted route adds or removes a field the proxy writes itself (the
/// HTTP targets' round trip for a route's header changes: a route that removed
/// `Content-Length` would send a body the server reads as the next request).
pub fn config_lb(data: &[u8]) {
    let Some(config) = load::<lab_lb::LbConfig>(
        data,
        LB,
        <lab_lb::LbDaemon as lab_daemon::Daemon>::check_files,
    ) else {
        return;
    };
    written_again(&config, LB);
    for route in config
        .listeners
        .iter()
        .filter_map(|l| l.http.as_ref())
        .flat_map(|h| &h.routes)
    {
        let changed = route
            .add_request_headers
            .keys()
            .chain(route.add_response_headers.keys())
            .chain(&route.remove_request_headers)
            .chain(&route.remove_response_headers);
        for name in changed {
            assert!(
                !PROXYS_OWN
                    .iter()
                    .any(|f| name.trim().eq_ignore_ascii_case(f)),
                "a route may change `{name}`"
            );
        }
    }
}

/// `data` as `vpn.toml`: refused with every message naming the file, or accepted and accepted
/// again once written out.
pub fn config_vpn(data: &[u8]) {
    if let Some(config) = load::<lab_vpn::VpnConfig>(data, VPN, |_, _| {}) {
        written_again(&config, VPN);
    }
}

/// `data` as `lab.toml`: loaded as [`config_vpn`] loads `vpn.toml`; the lb.toml and vpn.toml an
/// accepted lab renders are accepted too, and again once written out.
pub fn config_lab(data: &[u8]) {
    let Some(lab) = load::<lab_bootstrap::Lab>(data, LAB, |_, _| {}) else {
        return;
    };
    written_again(&lab, LAB);
    if let Ok(lb) = lab_bootstrap::render::containers::lb_config(&lab) {
        written_again(&lb, LB);
    }
    if let Ok(vpn) = lab_bootstrap::render::containers::vpn_config(&lab) {
        written_again(&vpn, VPN);
    }
}
