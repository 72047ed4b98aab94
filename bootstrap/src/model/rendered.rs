//! The `lb.toml` and `vpn.toml` a lab renders, checked as lab-lb and lab-vpn check them (the
//! schema's own validation), so `validate` refuses a lab whose daemons would refuse their
//! files. Each problem is named by the lab.toml key it comes from.

use super::Lab;
use crate::render::containers::{lb_config, vpn_config};
use lab_schema::{ConfigFile, Invalid, Issues};

impl Lab {
    /// Renders lb.toml and vpn.toml and adds the schema's problems with them to `issues`.
    /// Meant for a lab that passed its own checks: those name the lab.toml side of anything
    /// both would find.
    pub(super) fn validate_rendered(&self, issues: &mut Issues) {
        match lb_config(self) {
            Ok(lb) => add_problems(&lb, "lb.toml", |key| self.lb_key(key), issues),
            Err(e) => issues.add("lb", e.to_string()),
        }
        match vpn_config(self) {
            Ok(vpn) => add_problems(&vpn, "vpn.toml", vpn_key, issues),
            Err(e) => issues.add("vpn", e.to_string()),
        }
    }

    /// Listener and backend `i` of lb.toml are both made from route `i` of [`Lab::lb_routes`]:
    /// `lb.route[i]` when lab.toml lists its routes, `lb` when they are the defaults.
    fn lb_key(&self, key: &str) -> String {
        let Some((index, field)) = ["listener[", "backend["]
            .iter()
            .find_map(|prefix| indexed(key, prefix))
        else {
            return "lb".to_owned();
        };
        if self.lb.routes.is_none() {
            return "lb".to_owned();
        }
        let route = format!("lb.route[{index}]");
        let field = field.strip_prefix('.').unwrap_or(field);
        let (first, _) = field.split_once(['.', '[']).unwrap_or((field, ""));
        match first {
            // Both are named after the route.
            "name" | "backend" => format!("{route}.name"),
            // The address is the lb's on the route's network: the port is the route's choice.
            "listen" => format!("{route}.port"),
            // A listener's HTTP settings (certificates) follow from its mode alone.
            "http" | "mode" => format!("{route}.mode"),
            "health_check" => format!("{route}.{field}"),
            _ => route,
        }
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

/// `interface` comes from `[vpn] tunnel` and the networks; peer `i` from `vpn.peer[i]`, its
/// allowed IPs from its `address`.
fn vpn_key(key: &str) -> String {
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
    fn indexed_keys_split_into_index_and_field() {
        assert_eq!(
            indexed("listener[3].backend", "listener["),
            Some((3, ".backend"))
        );
        assert_eq!(indexed("backend[0]", "backend["), Some((0, "")));
        assert_eq!(indexed("listener", "listener["), None);
    }
}
