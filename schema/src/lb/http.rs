//! `[listener.http]`: what `http` and `https` listeners add to a listener: routes by host and
//! path, TLS certificates chosen by SNI, trusted proxies, timeouts and limits.

use crate::{Issues, Name, SniPattern};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// `[listener.http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListener {
    /// First match wins; requests matching none go to the listener's `backend`.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<HttpRoute>,
    /// `https`: certificate/key pairs; the first is served to clients whose SNI matches no
    /// pair's `names`.
    #[serde(default, rename = "cert", skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertPair>,
    /// How requests reach particular backends' servers; plain HTTP/1.1 for the others.
    #[serde(default, rename = "upstream", skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamProtocol>,
    /// Peers whose `X-Forwarded-For` is kept (and appended to); from anyone else it is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<IpNet>,
    /// How long a server may take to connect.
    #[serde(
        with = "humantime_serde",
        default = "HttpListener::default_connect_timeout"
    )]
    pub upstream_connect_timeout: Duration,
    /// How long a server may stay silent while answering (504 after).
    #[serde(
        with = "humantime_serde",
        default = "HttpListener::default_response_timeout"
    )]
    pub upstream_response_timeout: Duration,
    /// How long a client may leave a request body (or an upgraded stream's reads from the
    /// client, before the upgrade) idle.
    #[serde(
        with = "humantime_serde",
        default = "HttpListener::default_client_body_timeout"
    )]
    pub client_body_timeout: Duration,
    /// How long a write to the client may stay blocked, the client not reading, before its
    /// connection is closed (nginx's `send_timeout`): a stalled reader holds no request slot
    /// or server connection for good.
    #[serde(
        with = "humantime_serde",
        default = "HttpListener::default_client_send_timeout"
    )]
    pub client_send_timeout: Duration,
    /// How long a connection may wait idle for its next request (HTTP/2: with no stream open).
    #[serde(
        with = "humantime_serde",
        default = "HttpListener::default_keepalive_timeout"
    )]
    pub keepalive_timeout: Duration,
    /// Largest request header (request line and fields) accepted; 431 beyond. pingora itself
    /// stops reading at 1 MiB.
    #[serde(default = "HttpListener::default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// Requests served at once; more get 503 with `Retry-After`. Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// HTTP/2 streams one client connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[serde(default = "HttpListener::default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// `http` listeners: HTTP/2 without TLS from clients that know the listener speaks it
    /// ("prior knowledge", RFC 9113 §3.3); off, such a connection is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
}

impl Default for HttpListener {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            certs: Vec::new(),
            upstreams: Vec::new(),
            trusted_proxies: Vec::new(),
            upstream_connect_timeout: Self::default_connect_timeout(),
            upstream_response_timeout: Self::default_response_timeout(),
            client_body_timeout: Self::default_client_body_timeout(),
            client_send_timeout: Self::default_client_send_timeout(),
            keepalive_timeout: Self::default_keepalive_timeout(),
            max_header_bytes: Self::default_max_header_bytes(),
            max_requests: None,
            h2_max_concurrent_streams: Self::DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2c: false,
        }
    }
}

impl HttpListener {
    /// `upstream_connect_timeout` when unset.
    pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `upstream_response_timeout` when unset.
    pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `client_body_timeout` when unset.
    pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// `client_send_timeout` when unset.
    pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// `keepalive_timeout` when unset.
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
    /// `max_header_bytes` when unset.
    pub const DEFAULT_MAX_HEADER_BYTES: u32 = 32 * 1024;
    /// `h2_max_concurrent_streams` when unset.
    pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
    /// The largest `h2_max_concurrent_streams` accepted: each open stream may hold a request
    /// slot and a server connection.
    pub const MAX_H2_MAX_CONCURRENT_STREAMS: u32 = 1024;
    /// The smallest `max_header_bytes` accepted.
    pub const MIN_MAX_HEADER_BYTES: u32 = 1024;
    /// The largest `max_header_bytes` accepted: pingora stops reading a header at 1 MiB.
    pub const MAX_MAX_HEADER_BYTES: u32 = 1_048_575;

    fn default_connect_timeout() -> Duration {
        Self::DEFAULT_UPSTREAM_CONNECT_TIMEOUT
    }

    fn default_client_body_timeout() -> Duration {
        Self::DEFAULT_CLIENT_BODY_TIMEOUT
    }

    fn default_client_send_timeout() -> Duration {
        Self::DEFAULT_CLIENT_SEND_TIMEOUT
    }

    fn default_keepalive_timeout() -> Duration {
        Self::DEFAULT_KEEPALIVE_TIMEOUT
    }

    fn default_h2_max_concurrent_streams() -> u32 {
        Self::DEFAULT_H2_MAX_CONCURRENT_STREAMS
    }

    fn default_max_header_bytes() -> u32 {
        Self::DEFAULT_MAX_HEADER_BYTES
    }

    fn default_response_timeout() -> Duration {
        Self::DEFAULT_UPSTREAM_RESPONSE_TIMEOUT
    }
}

/// `[[listener.http.route]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    /// Exact host or `*.suffix`; any host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix; `/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where matching requests go (unless `status` or `redirect_https` answers them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Name>,
    /// Answer with this status (and `body`) instead of proxying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The body answered with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Answer plain-HTTP requests with a 308 to the same URL over https.
    #[serde(default)]
    pub redirect_https: bool,
    /// Fields set on the request before it is proxied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add_request_headers: BTreeMap<String, String>,
    /// Fields taken out of the request before it is proxied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_request_headers: Vec<String>,
    /// Fields set on the response before it is sent on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add_response_headers: BTreeMap<String, String>,
    /// Fields taken out of the response before it is sent on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_response_headers: Vec<String>,
    /// Largest request body accepted (413 beyond). Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
}

/// `[[listener.http.upstream]]`: TLS and HTTP/2 towards one backend's servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProtocol {
    /// The backend whose servers this is about.
    pub backend: Name,
    /// Connect to the servers over TLS.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificates the servers' certificates must chain to; the system's roots when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// `false` turns verification off, explicitly, for this backend.
    #[serde(default = "yes")]
    pub verify: bool,
    /// The name sent as SNI and checked against the servers' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Speak HTTP/2 to the servers (ALPN over TLS, prior knowledge without).
    #[serde(default)]
    pub h2: bool,
}

fn yes() -> bool {
    true
}

/// `[[listener.http.cert]]`: PEM files, re-read on reload and when they change on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// SNI names (exact or `*.suffix`) this pair is served for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// A route may not add or remove a field the proxy writes itself: the framing
/// (`Content-Length`, `Transfer-Encoding`) and the hop-by-hop fields. A removed
/// `Content-Length` sends the body on while the server reads none, so the body is read as the
/// next request on a kept-alive server connection (request smuggling); an added one or a
/// transfer coding makes the length ambiguous; hop-by-hop fields describe one connection.
fn route_changes_own_fields(route: &HttpRoute, route_key: &str, issues: &mut Issues) {
    let owned = super::headers::is_proxys_own;
    let added = [
        ("add_request_headers", &route.add_request_headers),
        ("add_response_headers", &route.add_response_headers),
    ];
    for (field, map) in added {
        for name in map.keys().filter(|n| owned(n)) {
            issues.add(
                format!("{route_key}.{field}.{name}"),
                format!("`{name}` is the proxy's to write (framing or hop-by-hop), not a route's"),
            );
        }
    }
    let removed = [
        ("remove_request_headers", &route.remove_request_headers),
        ("remove_response_headers", &route.remove_response_headers),
    ];
    for (field, names) in removed {
        for (i, name) in names.iter().enumerate().filter(|(_, n)| owned(n)) {
            issues.add(
                format!("{route_key}.{field}[{i}]"),
                format!("`{name}` is the proxy's to write (framing or hop-by-hop), not a route's"),
            );
        }
    }
}

/// Checks `http` of a listener (an `https` one when `https`), its issues under `key`. The
/// certificate and CA files it names are not read: lab-lb loads them at `check`, start and
/// reload.
pub fn validate(
    http: &HttpListener,
    https: bool,
    backends: &HashSet<&Name>,
    key: &str,
    issues: &mut Issues,
) {
    for (i, route) in http.routes.iter().enumerate() {
        let route_key = format!("{key}.route[{i}]");
        if let Some(host) = &route.host {
            if let Err(problem) = SniPattern::parse(host) {
                issues.add(format!("{route_key}.host"), problem);
            }
        }
        if let Some(path) = &route.path {
            if !path.starts_with('/') {
                issues.add(format!("{route_key}.path"), "a path prefix starts with `/`");
            }
        }
        match (&route.backend, route.status, route.redirect_https) {
            (None, None, false) => issues.add(
                route_key.clone(),
                "a route needs a backend, a status or redirect_https",
            ),
            (Some(backend), _, _) if !backends.contains(backend) => issues.add(
                format!("{route_key}.backend"),
                format!("no [[backend]] is named `{backend}`"),
            ),
            _ => {}
        }
        if let Some(status) = route.status {
            if !(100..=599).contains(&status) {
                issues.add(
                    format!("{route_key}.status"),
                    "not an HTTP status (100-599)",
                );
            }
        }
        for (name, value) in route
            .add_request_headers
            .iter()
            .chain(&route.add_response_headers)
        {
            if ::http::HeaderName::try_from(name.as_str()).is_err()
                || ::http::HeaderValue::try_from(value.as_str()).is_err()
            {
                issues.add(
                    format!("{route_key}.add_*_headers.{name}"),
                    "not a valid header name and value",
                );
            }
        }
    }
    for (i, route) in http.routes.iter().enumerate() {
        route_changes_own_fields(route, &format!("{key}.route[{i}]"), issues);
    }
    for (i, upstream) in http.upstreams.iter().enumerate() {
        let up_key = format!("{key}.upstream[{i}]");
        if !backends.contains(&upstream.backend) {
            issues.add(
                format!("{up_key}.backend"),
                format!("no [[backend]] is named `{}`", upstream.backend),
            );
        }
        if let Some(first) = http.upstreams[..i]
            .iter()
            .position(|u| u.backend == upstream.backend)
        {
            issues.add(
                format!("{up_key}.backend"),
                format!(
                    "backend `{}` is already set in upstream[{first}]",
                    upstream.backend
                ),
            );
        }
        if !upstream.tls && (upstream.ca.is_some() || upstream.server_name.is_some()) {
            issues.add(up_key.clone(), "ca and server_name need tls = true");
        }
        if upstream.tls && upstream.verify && upstream.server_name.is_none() {
            issues.add(
                format!("{up_key}.server_name"),
                "verifying the servers needs the name their certificates carry (or verify = false)",
            );
        }
    }
    if https && http.certs.is_empty() {
        issues.add(
            format!("{key}.cert"),
            "mode = \"https\" needs at least one [[listener.http.cert]]",
        );
    }
    if !https && !http.certs.is_empty() {
        issues.add(format!("{key}.cert"), "certificates need mode = \"https\"");
    }
    if https && http.h2c {
        issues.add(
            format!("{key}.h2c"),
            "h2c is HTTP/2 without TLS, for mode = \"http\" (https clients choose h2 by ALPN)",
        );
    }
    if !(1..=HttpListener::MAX_H2_MAX_CONCURRENT_STREAMS).contains(&http.h2_max_concurrent_streams)
    {
        issues.add(
            format!("{key}.h2_max_concurrent_streams"),
            "must be between 1 and 1024",
        );
    }
    for (i, pair) in http.certs.iter().enumerate() {
        for (k, name) in pair.names.iter().enumerate() {
            if let Err(problem) = SniPattern::parse(name) {
                issues.add(format!("{key}.cert[{i}].names[{k}]"), problem);
            }
        }
    }
    let header_bytes = HttpListener::MIN_MAX_HEADER_BYTES..=HttpListener::MAX_MAX_HEADER_BYTES;
    if !header_bytes.contains(&http.max_header_bytes) {
        issues.add(
            format!("{key}.max_header_bytes"),
            "must be between 1024 and 1048575 (pingora's own limit)",
        );
    }
    for (field, value) in [
        ("client_body_timeout", http.client_body_timeout),
        ("client_send_timeout", http.client_send_timeout),
        ("keepalive_timeout", http.keepalive_timeout),
        ("upstream_connect_timeout", http.upstream_connect_timeout),
        ("upstream_response_timeout", http.upstream_response_timeout),
    ] {
        if value.is_zero() {
            issues.add(format!("{key}.{field}"), "must be longer than 0s");
        }
    }
    if http.max_requests == Some(0) {
        issues.add(
            format!("{key}.max_requests"),
            "0 would refuse every request; leave it out for no limit",
        );
    }
}
