//! The checks of `lb.toml` serde cannot make: names that must exist or be unique, addresses
//! that would clash, limits and timeouts that would serve nothing.

use super::{HealthCheck, HealthCheckKind, LbConfig, ListenerMode, Server};
use crate::{Issues, Name, SniPattern};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Two sockets cannot both listen on these addresses: same port, and the same IP or a wildcard
/// that covers the other (`0.0.0.0` and `[::]` take every address on Linux by default).
pub fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl LbConfig {
    pub(super) fn validate_listeners(&self, issues: &mut Issues) {
        if self.listeners.is_empty() {
            issues.add(
                "listener",
                "no [[listener]] is configured; the balancer would serve nothing",
            );
        }
        let backends: HashSet<&Name> = self.backends.iter().map(|b| &b.name).collect();
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = format!("listener[{i}]");
            if let Some(first) = self.listeners[..i]
                .iter()
                .position(|l| l.name == listener.name)
            {
                issues.add(
                    format!("{key}.name"),
                    format!(
                        "listener `{}` is already defined as listener[{first}]",
                        listener.name
                    ),
                );
            }
            if let Some(first) = self.listeners[..i]
                .iter()
                .position(|l| addresses_clash(l.listen, listener.listen))
            {
                issues.add(
                    format!("{key}.listen"),
                    format!(
                        "{} is already taken by listener `{}` ({})",
                        listener.listen, self.listeners[first].name, self.listeners[first].listen
                    ),
                );
            }
            if addresses_clash(self.metrics.listen, listener.listen) {
                issues.add(
                    format!("{key}.listen"),
                    format!(
                        "{} is already taken by [metrics] listen ({})",
                        listener.listen, self.metrics.listen
                    ),
                );
            }
            if !backends.contains(&listener.backend) {
                issues.add(
                    format!("{key}.backend"),
                    format!("no [[backend]] is named `{}`", listener.backend),
                );
            }
            if listener.max_connections == 0 {
                issues.add(
                    format!("{key}.max_connections"),
                    "0 would refuse every connection",
                );
            }
            if listener.max_connections_per_client == 0 {
                issues.add(
                    format!("{key}.max_connections_per_client"),
                    "0 would refuse every connection",
                );
            }
            if !listener.routes.is_empty() && listener.mode != ListenerMode::TlsPassthrough {
                issues.add(
                    format!("{key}.route"),
                    format!(
                        "routes by SNI need mode = \"tls-passthrough\", not \"{}\"",
                        listener.mode.as_str()
                    ),
                );
            }
            let l7 = matches!(listener.mode, ListenerMode::Http | ListenerMode::Https);
            match (&listener.http, l7) {
                (Some(_), false) => issues.add(
                    format!("{key}.http"),
                    format!(
                        "[listener.http] needs mode = \"http\" or \"https\", not \"{}\"",
                        listener.mode.as_str()
                    ),
                ),
                (http, true) => super::http::validate(
                    &http.clone().unwrap_or_default(),
                    listener.mode == ListenerMode::Https,
                    &backends,
                    &format!("{key}.http"),
                    issues,
                ),
                (None, false) => {}
            }
            for (j, route) in listener.routes.iter().enumerate() {
                let route_key = format!("{key}.route[{j}]");
                if !backends.contains(&route.backend) {
                    issues.add(
                        format!("{route_key}.backend"),
                        format!("no [[backend]] is named `{}`", route.backend),
                    );
                }
                if route.sni.is_empty() {
                    issues.add(
                        format!("{route_key}.sni"),
                        "a route needs at least one name",
                    );
                }
                for (k, name) in route.sni.iter().enumerate() {
                    if let Err(problem) = SniPattern::parse(name) {
                        issues.add(format!("{route_key}.sni[{k}]"), problem);
                    }
                }
            }
        }
    }

    pub(super) fn validate_backends(&self, issues: &mut Issues) {
        let mut seen: HashMap<&Name, usize> = HashMap::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let key = format!("backend[{i}]");
            if let Some(first) = seen.insert(&backend.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!(
                        "backend `{}` is already defined as backend[{first}]",
                        backend.name
                    ),
                );
            }
            if backend.servers.is_empty() {
                issues.add(
                    key.clone(),
                    format!("backend `{}` has no [[backend.server]]", backend.name),
                );
            }
            for (j, server) in backend.servers.iter().enumerate() {
                let server_key = format!("{key}.server[{j}]");
                if backend.servers[..j]
                    .iter()
                    .any(|s| s.address == server.address)
                {
                    issues.add(
                        format!("{server_key}.address"),
                        format!(
                            "{} is listed twice in backend `{}`",
                            server.address, backend.name
                        ),
                    );
                }
                if server.weight > Server::MAX_WEIGHT {
                    issues.add(
                        format!("{server_key}.weight"),
                        format!(
                            "weight {} is above the maximum of {}",
                            server.weight,
                            Server::MAX_WEIGHT
                        ),
                    );
                }
            }
            if let Some(check) = &backend.health_check {
                validate_health_check(check, &format!("{key}.health_check"), issues);
            }
            if !backend.servers.is_empty() && backend.servers.iter().all(|s| s.weight == 0) {
                issues.add(
                    key,
                    format!(
                        "every server of backend `{}` has weight 0, so none would get traffic",
                        backend.name
                    ),
                );
            }
        }
    }
}

fn validate_health_check(check: &HealthCheck, key: &str, issues: &mut Issues) {
    for (field, value) in [("rise", check.rise), ("fall", check.fall)] {
        if value == 0 {
            issues.add(format!("{key}.{field}"), "must be at least 1");
        }
    }
    if check.interval.is_zero() {
        issues.add(format!("{key}.interval"), "must be longer than 0s");
    }
    if check.timeout.is_zero() || check.timeout > check.interval {
        issues.add(
            format!("{key}.timeout"),
            format!(
                "must be longer than 0s and at most the interval ({:?})",
                check.interval
            ),
        );
    }
    let http = matches!(check.kind, HealthCheckKind::Http | HealthCheckKind::Https);
    if !http && (check.path.is_some() || !check.expect_status.is_empty()) {
        issues.add(
            key.to_owned(),
            "`path` and `expect_status` apply to kind = \"http\" or \"https\" only",
        );
    }
    if let Some(path) = &check.path {
        if !path.starts_with('/')
            || path
                .chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            issues.add(
                format!("{key}.path"),
                format!("`{path}` is not a request path like `/readyz`"),
            );
        }
    }
    for (i, status) in check.expect_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            issues.add(
                format!("{key}.expect_status[{i}]"),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    if let Some(host) = &check.host {
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            issues.add(
                format!("{key}.host"),
                format!("`{host}` is not a host name"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::problems;

    #[test]
    fn wildcard_clashes_with_specific_address_on_same_port() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let one: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let other_port: SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert!(addresses_clash(any, one));
        assert!(!addresses_clash(one, other_port));
    }

    #[test]
    fn a_route_may_not_change_the_framing_or_hop_by_hop_fields() {
        let config = |changes: &str| {
            format!(
                "[metrics]\nlisten = \"127.0.0.1:9100\"\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\nmode = \"http\"\n\
                 backend = \"b\"\n[listener.http]\n[[listener.http.route]]\npath = \"/\"\nbackend = \"b\"\n\
                 {changes}\n[[backend]]\nname = \"b\"\nserver = [{{ address = \"127.0.0.1:9\" }}]\n"
            )
        };
        let accepted = problems::<LbConfig>(&config("remove_request_headers = [\"x-gone\"]"));
        assert!(accepted.is_empty(), "{accepted:?}");
        for changes in [
            "remove_request_headers = [\"x-a\", \"Content-Length\"]",
            "add_request_headers = { transfer-encoding = \"chunked\" }",
            "add_response_headers = { content-length = \"0\" }",
            "remove_response_headers = [\"connection\"]",
            "add_request_headers = { upgrade = \"h2c\" }",
        ] {
            let refused = problems::<LbConfig>(&config(changes));
            assert!(
                refused
                    .iter()
                    .any(|e| e.contains("is the proxy's to write")),
                "{changes}: {refused:?}"
            );
        }
    }

    /// One backend with a health check of `check`, behind a listener in `mode`.
    fn with(mode: &str, check: &str) -> String {
        format!(
            "[metrics]\nlisten = \"127.0.0.1:9100\"\n[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:8443\"\n\
             mode = \"{mode}\"\nbackend = \"b\"\n[[backend]]\nname = \"b\"\nserver = [{{ address = \"127.0.0.1:9\" }}]\n\
             health_check = {{ kind = \"tcp\", {check} }}\n"
        )
    }

    #[test]
    fn health_checks_need_an_interval_and_a_timeout_within_it() {
        assert_eq!(
            problems::<LbConfig>(&with("tcp", "rise = 1")),
            Vec::<String>::new()
        );
        assert_eq!(
            problems::<LbConfig>(&with("tcp", "interval = \"0s\", timeout = \"0s\"")),
            [
                "key `backend[0].health_check.interval`: must be longer than 0s",
                "key `backend[0].health_check.timeout`: must be longer than 0s and at most the interval (0ns)",
            ]
        );
        assert_eq!(
            problems::<LbConfig>(&with("tcp", "interval = \"1s\", timeout = \"2s\"")),
            ["key `backend[0].health_check.timeout`: must be longer than 0s and at most the interval (1s)"]
        );
    }

    #[test]
    fn an_https_listener_needs_a_certificate_but_its_files_are_not_read_here() {
        assert_eq!(
            problems::<LbConfig>(&with("https", "rise = 1")),
            ["key `listener[0].http.cert`: mode = \"https\" needs at least one [[listener.http.cert]]"]
        );
        let with_files = with("https", "rise = 1").replace(
            "[[backend]]",
            "[[listener.http.cert]]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n[[backend]]",
        );
        assert_eq!(problems::<LbConfig>(&with_files), Vec::<String>::new());
    }
}
