//! `[[lb.route]]`: what the load balancer publishes and to which machines.

use super::{Lab, NetworkId, Role};
use lab_daemon::{Issues, Name};
use lab_schema::lb::{BalanceAlgorithm, HealthCheck, HealthCheckKind, ListenerMode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// lab-lb's metrics port on its net2 address (configs/lb.toml's): no `[[lb.route]]` may take it.
pub const LB_METRICS_PORT: u16 = 8404;

/// `[lb]`: without any `[[lb.route]]`, the routes of [`default_routes`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lb {
    /// The `[[lb.route]]` tables, in lab.toml order; without the key, [`default_routes`].
    #[serde(default, rename = "route", skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<LbRoute>>,
    /// 2: two lb containers, keepalived moving the published addresses between them
    /// (docs/ARCHITECTURE.md, "Pairs"); 1 when unset.
    #[serde(default, skip_serializing_if = "super::Replicas::is_single")]
    pub replicas: super::Replicas,
    /// A pair's first container takes the addresses back once healthy again; when unset, the
    /// addresses stay where they are until that side fails (keepalived's `nopreempt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempt: bool,
}

/// One listener of lab-lb and the machines behind it, reached on their net2 addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbRoute {
    /// Names the listener and its backend in lb.toml.
    pub name: Name,
    /// Which of the lb's addresses listens: net0 (the outside) or net2 (the nodes' side).
    pub listen: NetworkId,
    /// The listener's port; not 0, and on net2 not [`LB_METRICS_PORT`]. At most one route
    /// per network and port.
    pub port: u16,
    /// What the listener does with a connection; `tcp` when unset.
    #[serde(default = "LbRoute::default_mode")]
    pub mode: ListenerMode,
    /// Every machine with one of these roles…
    #[serde(default)]
    pub roles: Vec<Role>,
    /// …and these machines by name.
    #[serde(default)]
    pub machines: Vec<Name>,
    /// The machines' port; the listener's when unset.
    #[serde(default)]
    pub target_port: Option<u16>,
    /// How a machine is picked for each new connection; `round-robin` when unset.
    #[serde(default)]
    pub balance: BalanceAlgorithm,
    /// lb.toml's `[backend.health_check]` for the machines (and those of every `http` rule);
    /// without it a machine counts as up unless connecting to it fails.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// `[[lb.route.cert]]`, `https` only: the certificates served, picked by SNI.
    #[serde(default, rename = "cert", skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<RouteCert>,
    /// `[[lb.route.http]]`, `http` and `https` only: requests by host and path to other
    /// machines, first match wins; the others go to the route's own machines.
    #[serde(default, rename = "http", skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRule>,
}

/// `[[lb.route.cert]]`: a PEM certificate chain and its key, files named relative to lab.toml;
/// pushed into the lb container, the key 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCert {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// Server names (exact or `*.suffix`) this pair is served for; the route's first pair is
    /// served to clients naming none of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// `[[lb.route.http]]`: requests for `host` under `path` go to these machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// Exact host or `*.suffix`; any host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix; `/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every machine with one of these roles…
    #[serde(default)]
    pub roles: Vec<Role>,
    /// …and these machines by name.
    #[serde(default)]
    pub machines: Vec<Name>,
    /// The machines' port; the route's `target_port` when unset.
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// The machines with one of `roles` or named in `machines`, in lab.toml order, each once.
fn machines_of<'a>(lab: &'a Lab, roles: &[Role], machines: &[Name]) -> Vec<&'a super::Machine> {
    lab.machines
        .iter()
        .filter(|m| roles.contains(&m.role) || machines.contains(&m.name))
        .collect()
}

impl HttpRule {
    /// The machines this rule sends to, in lab.toml order, each once.
    pub fn targets<'a>(&self, lab: &'a Lab) -> Vec<&'a super::Machine> {
        machines_of(lab, &self.roles, &self.machines)
    }
}

impl LbRoute {
    fn default_mode() -> ListenerMode {
        ListenerMode::Tcp
    }

    /// The port connections go to on the machines: `target_port`, else `port`.
    pub fn target_port(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }

    /// The machines behind this route, in lab.toml order, each once.
    pub fn targets<'a>(&self, lab: &'a Lab) -> Vec<&'a super::Machine> {
        machines_of(lab, &self.roles, &self.machines)
    }

    /// The lb.toml backend of `http` rule `index`: the route's name, a dot, the rule's index.
    pub fn rule_backend(&self, index: usize) -> String {
        format!("{}.{index}", self.name)
    }
}

fn check(kind: HealthCheckKind, path: Option<&str>, expect_status: &[u16]) -> HealthCheck {
    HealthCheck {
        path: path.map(str::to_owned),
        expect_status: expect_status.to_vec(),
        ..HealthCheck::with_defaults(kind)
    }
}

fn route(
    name: &str,
    listen: NetworkId,
    port: u16,
    mode: ListenerMode,
    role: Role,
    balance: BalanceAlgorithm,
    health_check: HealthCheck,
) -> Option<LbRoute> {
    Some(LbRoute {
        name: name.parse().ok()?,
        listen,
        port,
        mode,
        roles: vec![role],
        machines: Vec::new(),
        target_port: None,
        balance,
        health_check: Some(health_check),
        certs: Vec::new(),
        http: Vec::new(),
    })
}

/// The API (6443) and Talos (50000) on the lb's net2 address to the control planes; ingress
/// (80, 443) on its net0 address to the workers, only when there are workers (a backend
/// without servers is refused).
pub fn default_routes(lab: &Lab) -> Vec<LbRoute> {
    let mut out = vec![
        route(
            "kube-apiserver",
            NetworkId::Net2,
            6443,
            ListenerMode::Tcp,
            Role::ControlPlane,
            BalanceAlgorithm::LeastConnections,
            // Anonymous /readyz gets 401 when anonymous auth is off: still a live apiserver.
            check(HealthCheckKind::Https, Some("/readyz"), &[200, 401]),
        ),
        route(
            "talos-api",
            NetworkId::Net2,
            50000,
            ListenerMode::Tcp,
            Role::ControlPlane,
            BalanceAlgorithm::LeastConnections,
            check(HealthCheckKind::Tls, None, &[]),
        ),
    ];
    if lab.machines.iter().any(|m| m.role == Role::Worker) {
        out.push(route(
            "ingress-http",
            NetworkId::Net0,
            80,
            ListenerMode::Tcp,
            Role::Worker,
            BalanceAlgorithm::RoundRobin,
            check(HealthCheckKind::Tcp, None, &[]),
        ));
        out.push(route(
            "ingress-https",
            NetworkId::Net0,
            443,
            ListenerMode::TlsPassthrough,
            Role::Worker,
            BalanceAlgorithm::ConsistentHash,
            check(HealthCheckKind::Tcp, None, &[]),
        ));
    }
    out.into_iter().flatten().collect()
}

impl Lab {
    /// The routes lab-lb serves: lab.toml's, or the defaults.
    pub fn lb_routes(&self) -> Vec<LbRoute> {
        match &self.lb.routes {
            Some(routes) => routes.clone(),
            None => default_routes(self),
        }
    }

    pub(super) fn validate_lb(&self, issues: &mut Issues) {
        let Some(routes) = &self.lb.routes else {
            return;
        };
        let mut names: HashMap<&Name, usize> = HashMap::new();
        let mut ports: HashMap<(NetworkId, u16), usize> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let key = format!("lb.route[{i}]");
            if let Some(first) = names.insert(&route.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!("route `{}` is already lb.route[{first}]", route.name),
                );
            }
            if route.listen == NetworkId::Net1 {
                issues.add(
                    format!("{key}.listen"),
                    "the lb is on net0 and net2 only; listen on one of them",
                );
            }
            for (field, port) in [
                ("port", Some(route.port)),
                ("target_port", route.target_port),
            ] {
                if port == Some(0) {
                    issues.add(format!("{key}.{field}"), "port 0 is not a port");
                }
            }
            if let Some(first) = ports.insert((route.listen, route.port), i) {
                issues.add(
                    format!("{key}.port"),
                    format!(
                        "{} port {} is already lb.route[{first}]'s",
                        route.listen.as_str(),
                        route.port
                    ),
                );
            }
            if route.listen == NetworkId::Net2 && route.port == LB_METRICS_PORT {
                issues.add(
                    format!("{key}.port"),
                    format!("net2 port {} is lab-lb's own metrics address", route.port),
                );
            }
            self.check_targets(&key, &route.roles, &route.machines, issues);
            for (j, rule) in route.http.iter().enumerate() {
                let rule_key = format!("{key}.http[{j}]");
                self.check_targets(&rule_key, &rule.roles, &rule.machines, issues);
                if rule.target_port == Some(0) {
                    issues.add(format!("{rule_key}.target_port"), "port 0 is not a port");
                }
                let backend = route.rule_backend(j);
                if backend.parse::<Name>().is_err() {
                    issues.add(
                        format!("{key}.name"),
                        format!("too long for its http rules' backends (`{backend}`)"),
                    );
                } else if let Some(k) = routes.iter().position(|r| r.name.as_str() == backend) {
                    issues.add(
                        format!("lb.route[{k}].name"),
                        format!(
                            "`{backend}` is the backend of {rule_key}; name the route otherwise"
                        ),
                    );
                }
            }
            super::route_certs::check(route, &key, issues);
        }
    }

    /// `roles` and `machines` of a route or rule (under `key`) name Talos nodes on net2.
    fn check_targets(&self, key: &str, roles: &[Role], machines: &[Name], issues: &mut Issues) {
        if roles.is_empty() && machines.is_empty() {
            issues.add(
                key.to_owned(),
                "a route needs `roles` or `machines` to send connections to",
            );
        }
        for (j, role) in roles.iter().enumerate() {
            if !self.machines.iter().any(|m| m.role == *role) {
                issues.add(
                    format!("{key}.roles[{j}]"),
                    format!("no machine has role = \"{}\"", role.as_str()),
                );
            }
        }
        for (j, name) in machines.iter().enumerate() {
            match self.machines.iter().find(|m| &m.name == name) {
                None => issues.add(
                    format!("{key}.machines[{j}]"),
                    format!("there is no machine named `{name}`"),
                ),
                Some(m) if m.address_on(NetworkId::Net2).is_none() => issues.add(
                    format!("{key}.machines[{j}]"),
                    format!("`{name}` has no net2 address the lb could reach"),
                ),
                Some(_) => {}
            }
        }
        for (j, role) in roles.iter().enumerate() {
            if matches!(role, Role::Lb | Role::Vpn | Role::Manager) {
                issues.add(
                    format!("{key}.roles[{j}]"),
                    format!(
                        "the lb sends connections to Talos nodes, not to the {}",
                        role.as_str()
                    ),
                );
            }
        }
    }
}
