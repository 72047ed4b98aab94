//! `lab.toml` as lab-bootstrap loads it: the model's own checks ([`crate::model`]), then the
//! `lb.toml` and `vpn.toml` the lab renders, checked as lab-lb and lab-vpn check them (the
//! schema's own validation), so `validate` refuses a lab whose daemons would refuse their
//! files. Each problem is named by the lab.toml key it comes from. It sits above both the model
//! and the renderers, which is why it is not part of either.

use crate::model::{Lab, Role};
use crate::render::containers::{lb_config, vpn_config};
use lab_schema::{ConfigFile, Invalid, Issues};

impl ConfigFile for Lab {
    const WHAT: &'static str =
        "a lab description ([proxmox], [networks.net0..2], [cluster], [[machine]])";

    fn validate(&self, issues: &mut Issues) {
        self.validate_model(issues);
        // Only a lab that passed its own checks renders; those name anything both would find.
        if issues.is_empty() {
            validate_rendered(self, issues);
        }
    }

    /// Key files are named relative to lab.toml, as a user reading it takes them.
    fn resolve_paths(&mut self, dir: &std::path::Path) {
        let resolve = |path: &mut std::path::PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        for peer in &mut self.vpn.peers {
            if let Some(file) = &mut peer.public_key_file {
                resolve(file);
            }
        }
        for pair in self
            .lb
            .routes
            .iter_mut()
            .flatten()
            .flat_map(|r| &mut r.certs)
        {
            resolve(&mut pair.cert);
            resolve(&mut pair.key);
        }
        if let Some(file) = &mut self.manager.ssh_keys_file {
            resolve(file);
        }
        if let Some(gitops) = &mut self.gitops {
            resolve(&mut gitops.token_file);
        }
    }

    fn summary(&self) -> String {
        let count = |role| self.machines.iter().filter(|m| m.role == role).count();
        let (where_, memory) = if self.nodes.is_empty() {
            (
                self.proxmox.node.clone(),
                u64::from(self.proxmox.memory_mib.unwrap_or_default()),
            )
        } else {
            (
                format!(
                    "{} nodes ({}, lab router on {})",
                    self.nodes.len(),
                    self.node_names().join(", "),
                    self.proxmox.node
                ),
                self.nodes
                    .iter()
                    .map(|n| u64::from(n.memory_mib.saturating_sub(n.host_reserve_mib)))
                    .sum(),
            )
        };
        format!(
            "cluster {}: {} control planes, {} workers, {} other machines on {} ({} MiB of {} MiB)",
            self.cluster.name,
            count(Role::ControlPlane),
            count(Role::Worker),
            self.machines.len() - count(Role::ControlPlane) - count(Role::Worker),
            where_,
            self.machines
                .iter()
                .map(|m| u64::from(m.memory_mib))
                .sum::<u64>(),
            memory
        )
    }
}

/// Renders lb.toml and vpn.toml and adds the schema's problems with them to `issues`. Meant for
/// a lab that passed its own checks: those name the lab.toml side of anything both would find.
fn validate_rendered(lab: &Lab, issues: &mut Issues) {
    match lb_config(lab) {
        Ok(lb) => add_problems(&lb, "lb.toml", |key| lb_key(lab, key), issues),
        Err(e) => issues.add("lb", e.to_string()),
    }
    match vpn_config(lab) {
        Ok(vpn) => add_problems(&vpn, "vpn.toml", vpn_key, issues),
        Err(e) => issues.add("vpn", e.to_string()),
    }
}

/// Listener `i` of lb.toml is made from route `i` of [`Lab::lb_routes`], and its backends, in
/// order, from the route and then each of its `http` rules: `lb.route[i]` (`.http[j]`) when
/// lab.toml lists its routes, `lb` when they are the defaults.
fn lb_key(lab: &Lab, key: &str) -> String {
    let Some(routes) = &lab.lb.routes else {
        return "lb".to_owned();
    };
    if let Some((i, field)) = indexed(key, "listener[") {
        return listener_key(&format!("lb.route[{i}]"), field);
    }
    let Some((b, field)) = indexed(key, "backend[") else {
        return "lb".to_owned();
    };
    // Backend `b` is the route's own or one of its rules', counted through the routes.
    let mut first = 0;
    for (i, route) in routes.iter().enumerate() {
        let route_key = format!("lb.route[{i}]");
        if b < first + 1 + route.http.len() {
            let origin = match b - first {
                0 => route_key.clone(),
                rule => format!("{route_key}.http[{}]", rule - 1),
            };
            let field = field.strip_prefix('.').unwrap_or(field);
            let (head, _) = field.split_once(['.', '[']).unwrap_or((field, ""));
            return match head {
                "name" => format!("{route_key}.name"),
                "health_check" => format!("{route_key}.{field}"),
                _ => origin,
            };
        }
        first += 1 + route.http.len();
    }
    "lb".to_owned()
}

/// `field` of the listener made from the route at `route` (e.g. `lb.route[2]`).
fn listener_key(route: &str, field: &str) -> String {
    let field = field.strip_prefix('.').unwrap_or(field);
    if let Some(rest) = field.strip_prefix("http.cert[") {
        // `cert[k].names[n]` keeps its shape in lab.toml; a bare `http.cert` (none, or not
        // wanted) is about the mode, below.
        return format!("{route}.cert[{rest}");
    }
    if let Some((j, rest)) = indexed(field, "http.route[") {
        return match rest.strip_prefix('.') {
            Some(part @ ("host" | "path")) => format!("{route}.http[{j}].{part}"),
            _ => format!("{route}.http[{j}]"),
        };
    }
    let (first, _) = field.split_once(['.', '[']).unwrap_or((field, ""));
    match first {
        // Both are named after the route.
        "name" | "backend" => format!("{route}.name"),
        // The address is the lb's on the route's network: the port is the route's choice.
        "listen" => format!("{route}.port"),
        // `[listener.http]` follows from the mode (and the route's certificates and rules).
        "http" | "mode" => format!("{route}.mode"),
        _ => route.to_owned(),
    }
}

/// Validates `config`, the rendered `file`, each problem under the lab.toml key `lab_key` maps
/// its key to.
fn add_problems<T: ConfigFile>(
    config: &T,
    file: &str,
    lab_key: impl Fn(&str) -> String,
    issues: &mut Issues,
) {
    let mut found = Issues::new();
    config.validate(&mut found);
    for Invalid { key, message } in found.into_vec() {
        issues.add(
            lab_key(&key),
            format!("{message} (the rendered {file}'s `{key}`)"),
        );
    }
}

/// `interface` comes from `[vpn] tunnel` and the networks (its search domain from
/// `networks.domain`); peer `i` from `vpn.peer[i]`, its
/// allowed IPs from its `address`.
fn vpn_key(key: &str) -> String {
    if key.starts_with("interface.dns_search") {
        return "networks.domain".to_owned();
    }
    if key == "interface.udp_receive_buffer" {
        return "vpn.udp_receive_buffer".to_owned();
    }
    if key.starts_with("interface") {
        return "vpn.tunnel".to_owned();
    }
    let Some((index, field)) = indexed(key, "peer[") else {
        return "vpn".to_owned();
    };
    let peer = format!("vpn.peer[{index}]");
    match field.strip_prefix('.') {
        Some(field) if field.starts_with("allowed_ips") => format!("{peer}.address"),
        Some(field @ ("name" | "public_key")) => format!("{peer}.{field}"),
        _ => peer,
    }
}

/// `listener[3].backend` with `prefix` `listener[`: `(3, ".backend")`.
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    let (index, field) = rest.split_once(']')?;
    Some((index.parse().ok()?, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpn_keys_map_to_the_lab_toml_keys_they_come_from() {
        assert_eq!(vpn_key("interface.reach[1]"), "vpn.tunnel");
        assert_eq!(vpn_key("peer[2].allowed_ips[0]"), "vpn.peer[2].address");
        assert_eq!(vpn_key("peer[0].public_key"), "vpn.peer[0].public_key");
        assert_eq!(vpn_key("peer[1]"), "vpn.peer[1]");
        assert_eq!(vpn_key("metrics.listen"), "vpn");
    }

    #[test]
    fn http_listener_keys_map_to_the_route_s_certs_and_rules() {
        let route = "lb.route[1]";
        assert_eq!(
            listener_key(route, ".http.cert[0].names[2]"),
            "lb.route[1].cert[0].names[2]"
        );
        assert_eq!(listener_key(route, ".http.cert"), "lb.route[1].mode");
        assert_eq!(
            listener_key(route, ".http.route[3].host"),
            "lb.route[1].http[3].host"
        );
        assert_eq!(listener_key(route, ".http.route[3]"), "lb.route[1].http[3]");
        assert_eq!(listener_key(route, ".http"), "lb.route[1].mode");
        assert_eq!(listener_key(route, ".listen"), "lb.route[1].port");
    }

    #[test]
    fn indexed_keys_split_into_index_and_field() {
        assert_eq!(
            indexed("listener[3].backend", "listener["),
            Some((3, ".backend"))
        );
        assert_eq!(indexed("backend[0]", "backend["), Some((0, "")));
        assert_eq!(indexed("listener", "listener["), None);
    }
}
