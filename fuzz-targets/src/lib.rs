//! The bodies of the fuzz targets: one function per parser that reads bytes from the network or
//! from a config file, each checking what must hold for every input, not only that nothing
//! panics. `fuzz/` (cargo-fuzz, nightly, outside the workspace) calls them from libFuzzer;
//! `tests/replay.rs` calls them on stable on every file of `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/`, so what the fuzzers found stays found.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod http;
mod l4;
mod tls;
mod wireguard;

pub use config::{config_lab, config_lb, config_vpn};
pub use http::{chunked, h2_dechunk, http_request, http_response};
pub use l4::{proxy_protocol, sni};
pub use tls::tls_server;
pub use wireguard::{uapi, wireguard};

/// A target's body: panics on an input that breaks what must hold.
pub type Target = fn(&[u8]);

/// Every target by the name its binary, corpus and artifacts carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("http_request", http_request),
    ("http_response", http_response),
    ("chunked", chunked),
    ("h2_dechunk", h2_dechunk),
    ("sni", sni),
    ("proxy_protocol", proxy_protocol),
    ("tls_server", tls_server),
    ("wireguard", wireguard),
    ("uapi", uapi),
    ("config_lb", config_lb),
    ("config_vpn", config_vpn),
    ("config_lab", config_lab),
];

/// Bytes for an assertion message.
fn shown(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
