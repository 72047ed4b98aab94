//! The Proxmox VE API schema (`apidata.json`, the file the API viewer is built from) and the
//! validation of one call against it: method, every parameter name, types, enums, patterns,
//! ranges, lengths, required parameters, and the comma-separated property strings (`net0`,
//! `scsi0`, `ipconfig0`, …) against their format's sub-keys.
//!
//! Parameters are validated in their wire form (strings), as Proxmox receives them from a form
//! body or from `pvesh --name value`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use lab_bootstrap::model::names;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Why the schema could not be loaded, or why a call does not conform to it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{}: cannot read the API schema: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a Proxmox API schema: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: no such API path")]
    NoPath { path: String },
    #[error("{method} {path}: method not allowed (the API has {allowed})")]
    Method {
        method: String,
        path: String,
        allowed: String,
    },
    #[error("{method} {path}: unknown parameter `{name}`")]
    Unknown {
        method: String,
        path: String,
        name: String,
    },
    #[error("{method} {path}: missing required parameter `{name}`")]
    Missing {
        method: String,
        path: String,
        name: String,
    },
    #[error("{method} {path}: parameter `{name}`: {reason}")]
    Invalid {
        method: String,
        path: String,
        name: String,
        reason: String,
    },
}

/// One API path of the schema, like `/nodes/{node}/lxc/{vmid}/config`.
#[derive(Debug)]
struct Endpoint {
    segments: Vec<String>,
    /// Method name → the `parameters.properties` map.
    methods: BTreeMap<String, Map<String, Value>>,
}

/// The whole API: every path with its methods and parameters.
#[derive(Debug)]
pub struct Schema {
    endpoints: Vec<Endpoint>,
    privileges: Vec<String>,
}

/// A call the schema resolved: which template matched and the path's own parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub template: String,
    pub path_params: BTreeMap<String, String>,
}

impl Schema {
    /// Loads `apidata.json`.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.to_owned(),
            source,
        })?;
        let tree: Vec<Value> =
            serde_json::from_str(&text).map_err(|source| SchemaError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let mut endpoints = Vec::new();
        collect(&tree, &mut endpoints);
        let privileges = privileges(&tree);
        Ok(Self {
            endpoints,
            privileges,
        })
    }

    /// Finds the template a concrete path belongs to; literal segments win over `{param}` ones,
    /// so `/nodes/pve/network` is not taken for `/nodes/{node}/{something}`.
    pub fn resolve(&self, path: &str) -> Result<Resolved, SchemaError> {
        self.find(path).map(|(e, params)| Resolved {
            template: template_of(e),
            path_params: params,
        })
    }

    fn find(&self, path: &str) -> Result<(&Endpoint, BTreeMap<String, String>), SchemaError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(&Endpoint, usize, BTreeMap<String, String>)> = None;
        for e in &self.endpoints {
            if e.segments.len() != parts.len() {
                continue;
            }
            let mut literal = 0;
            let mut params = BTreeMap::new();
            let matched = e.segments.iter().zip(&parts).all(|(seg, part)| {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    params.insert(name.to_owned(), (*part).to_owned());
                    !part.is_empty()
                } else {
                    literal += 1;
                    seg == part
                }
            });
            if matched && best.as_ref().is_none_or(|(_, l, _)| literal > *l) {
                best = Some((e, literal, params));
            }
        }
        best.map(|(e, _, p)| (e, p))
            .ok_or_else(|| SchemaError::NoPath {
                path: path.to_owned(),
            })
    }

    /// Validates one call: `params` are the body/query parameters in wire form (path parameters
    /// come from `path` itself and are validated too).
    pub fn validate(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Resolved, SchemaError> {
        let (endpoint, path_params) = self.find(path)?;
        let props = endpoint
            .methods
            .get(method)
            .ok_or_else(|| SchemaError::Method {
                method: method.to_owned(),
                path: template_of(endpoint),
                allowed: endpoint
                    .methods
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let call = Call { method, path };
        let mut seen = Vec::new();
        for (name, value) in path_params.iter().chain(params.iter().map(|(n, v)| (n, v))) {
            let schema = lookup(props, name).ok_or_else(|| SchemaError::Unknown {
                method: method.to_owned(),
                path: path.to_owned(),
                name: name.clone(),
            })?;
            check_value(schema, value).map_err(|reason| call.invalid(name, reason))?;
            if schema.get("format").and_then(Value::as_str) == Some("pve-priv-list") {
                self.check_privileges(value)
                    .map_err(|reason| call.invalid(name, reason))?;
            }
            seen.push(name.as_str());
        }
        for (name, schema) in props {
            if !is_optional(schema) && !name.ends_with("[n]") && !seen.contains(&name.as_str()) {
                return Err(SchemaError::Missing {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    name: name.clone(),
                });
            }
        }
        Ok(Resolved {
            template: template_of(endpoint),
            path_params,
        })
    }
}

impl Schema {
    /// The privileges Proxmox knows: what a role's `GET /access/roles/{roleid}` may answer.
    pub fn privileges(&self) -> &[String] {
        &self.privileges
    }

    /// A `pve-priv-list` names only privileges Proxmox knows, as `pveum role add` insists.
    fn check_privileges(&self, value: &str) -> Result<(), String> {
        for privilege in value.split([',', ' ', ';']).filter(|p| !p.is_empty()) {
            if !self.privileges.iter().any(|p| p == privilege) {
                return Err(format!("invalid privilege name '{privilege}'"));
            }
        }
        Ok(())
    }
}

/// The properties of a role as `GET /access/roles/{roleid}` answers it: one per privilege.
fn privileges(nodes: &[Value]) -> Vec<String> {
    for node in nodes {
        if node.get("path").and_then(Value::as_str) == Some("/access/roles/{roleid}") {
            return node["info"]["GET"]["returns"]["properties"]
                .as_object()
                .map(|props| props.keys().cloned().collect())
                .unwrap_or_default();
        }
        if let Some(children) = node.get("children").and_then(Value::as_array) {
            let found = privileges(children);
            if !found.is_empty() {
                return found;
            }
        }
    }
    Vec::new()
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
}

impl Call<'_> {
    fn invalid(&self, name: &str, reason: String) -> SchemaError {
        SchemaError::Invalid {
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            name: name.to_owned(),
            reason,
        }
    }
}

fn collect(nodes: &[Value], out: &mut Vec<Endpoint>) {
    for node in nodes {
        if let Some(path) = node.get("path").and_then(Value::as_str) {
            let mut methods = BTreeMap::new();
            if let Some(info) = node.get("info").and_then(Value::as_object) {
                for (method, spec) in info {
                    let props = spec
                        .pointer("/parameters/properties")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    methods.insert(method.clone(), props);
                }
            }
            out.push(Endpoint {
                segments: path
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_owned)
                    .collect(),
                methods,
            });
        }
        if let Some(children) = node.get("children").and_then(Value::as_array) {
            collect(children, out);
        }
    }
}

fn template_of(e: &Endpoint) -> String {
    format!("/{}", e.segments.join("/"))
}

fn is_optional(schema: &Value) -> bool {
    flag(schema.get("optional"))
}

/// The schema writes flags as `1`, `0` or booleans.
fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

/// Finds a parameter's schema: by name, or as an instance of an indexed one (`net3` → `net[n]`)
/// within the range its description states (`n is 0 to 30`).
fn lookup<'a>(props: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(s) = props.get(name) {
        return Some(s);
    }
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (base, index) = name.split_at(name.len() - digits);
    // `net01` is not an instance of `net[n]`.
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    let index: u32 = index.parse().ok()?;
    let schema = props.get(&format!("{base}[n]"))?;
    match instance_limit(schema) {
        Some(max) if index > max => None,
        _ => Some(schema),
    }
}

fn instance_limit(schema: &Value) -> Option<u32> {
    let description = schema.get("description")?.as_str()?;
    let rest = &description[description.find("(n is 0 to ")? + "(n is 0 to ".len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Checks one wire value against its schema; the error says what is wrong with it.
fn check_value(schema: &Value, value: &str) -> Result<(), String> {
    match schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string")
    {
        "integer" => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("`{value}` is not an integer"))?;
            check_range(schema, n as f64, value)?;
        }
        "number" => {
            let n: f64 = value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("`{value}` is not a number"))?;
            check_range(schema, n, value)?;
        }
        "boolean" => {
            // What PVE's JSONSchema accepts for a boolean in a request.
            if !matches!(
                value.to_ascii_lowercase().as_str(),
                "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
            ) {
                return Err(format!("`{value}` is not a boolean (0 or 1)"));
            }
        }
        // Arrays arrive as repeated parameters; each element is checked as its item type.
        "array" => {
            if let Some(items) = schema.get("items") {
                return check_value(items, value);
            }
        }
        _ => check_string(schema, value)?,
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.iter().any(|c| enum_eq(c, value)) {
            let list: Vec<String> = choices.iter().map(enum_text).collect();
            return Err(format!("`{value}` is not one of {}", list.join(", ")));
        }
    }
    Ok(())
}

fn enum_eq(choice: &Value, value: &str) -> bool {
    enum_text(choice) == value
}

fn enum_text(choice: &Value) -> String {
    match choice {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_range(schema: &Value, n: f64, value: &str) -> Result<(), String> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min {
            return Err(format!("`{value}` is less than the minimum {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max {
            return Err(format!("`{value}` is more than the maximum {max}"));
        }
    }
    Ok(())
}

fn check_string(schema: &Value, value: &str) -> Result<(), String> {
    let len = value.chars().count();
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len as u64 > max {
            return Err(format!("{len} characters, more than the maximum {max}"));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if (len as u64) < min {
            return Err(format!("{len} characters, fewer than the minimum {min}"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if !pattern_matches(pattern, value) {
            return Err(format!("`{value}` does not match the pattern `{pattern}`"));
        }
    }
    match schema.get("format") {
        Some(Value::Object(keys)) => check_property_string(keys, value),
        Some(Value::String(named)) => check_named_format(named, schema, value),
        _ => Ok(()),
    }
}

/// PVE anchors every pattern (`^(?:pattern)$`). Perl syntax the `regex` crate lacks is
/// translated: `(?^:…)` / `(?^i:…)` groups, `\0`, `{,n}` (Perl 5.34+: up to n), and atomic
/// groups `(?>…)`, read as plain groups (which can only accept more, never refuse a valid
/// value). A pattern that still cannot be compiled is not enforced rather than refusing every
/// value; a unit test checks that every pattern of the schema compiles.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match compile(pattern) {
        Ok(re) => re.is_match(value),
        Err(_) => true,
    }
}

pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(re);
    }
    let translated = pattern
        .replace("(?^:", "(?:")
        .replace("(?^i:", "(?i:")
        .replace("(?>", "(?:")
        .replace("{,", "{0,")
        .replace("\\0", "\\x00");
    // Unicode classes repeated up to 256 times (`[\w\d\s]{0,256}`) outgrow the default limit.
    let re = RegexBuilder::new(&format!("^(?:{translated})$"))
        .size_limit(1 << 27)
        .build()?;
    if let Ok(mut c) = cache.lock() {
        c.insert(pattern.to_owned(), re.clone());
    }
    Ok(re)
}

/// A property string: `[default-key-value][,key=value]...`, each key checked against the format.
fn check_property_string(format: &Map<String, Value>, value: &str) -> Result<(), String> {
    let default_key = format
        .iter()
        .find(|(_, s)| flag(s.get("default_key")))
        .map(|(k, _)| k.as_str());
    let mut given: Vec<String> = Vec::new();
    for (i, part) in split_property_string(value).into_iter().enumerate() {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None if i == 0 => match default_key {
                Some(k) => (k.to_owned(), part.clone()),
                None => return Err(format!("`{part}` has no key (expected key=value)")),
            },
            None => return Err(format!("`{part}` has no key (expected key=value)")),
        };
        let sub = format
            .get(&key)
            .ok_or_else(|| format!("unknown key `{key}` in `{value}`"))?;
        // `virtio=MAC` sets two keys: the key names the model, the value is the MAC address.
        if let (Some(alias), Some(key_alias)) = (
            sub.get("alias").and_then(Value::as_str),
            sub.get("keyAlias").and_then(Value::as_str),
        ) {
            if let Some(s) = format.get(key_alias) {
                check_value(s, &key).map_err(|e| format!("key `{key_alias}`: {e}"))?;
            }
            if let Some(s) = format.get(alias) {
                check_value(s, &val).map_err(|e| format!("key `{alias}`: {e}"))?;
            }
            given.push(key_alias.to_owned());
            given.push(alias.to_owned());
            continue;
        }
        if given.contains(&key) {
            return Err(format!("key `{key}` given twice in `{value}`"));
        }
        check_value(sub, &val).map_err(|e| format!("key `{key}`: {e}"))?;
        given.push(key);
    }
    for (key, sub) in format {
        if sub.get("alias").is_none() && !is_optional(sub) && !given.contains(key) {
            return Err(format!("missing key `{key}` in `{value}`"));
        }
    }
    Ok(())
}

/// Splits on commas, except inside double quotes (PVE quotes values that contain commas).
fn split_property_string(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// The named formats whose rules are not in the schema file itself; the ones bootstrap sends
/// are checked, others are accepted. Named property-string formats list their keys in
/// `typetext` (`[gw=<GatewayIPv4>] [,ip=<IPv4Format/CIDR>]`), which is how their keys are known.
fn check_named_format(named: &str, schema: &Value, value: &str) -> Result<(), String> {
    let ok = match named {
        "mac-addr" => is_unicast_mac(value),
        "ipv4" => value.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => value.parse::<std::net::Ipv6Addr>().is_ok(),
        "ip" => value.parse::<std::net::IpAddr>().is_ok(),
        "CIDRv4" => value.parse::<ipnet::Ipv4Net>().is_ok(),
        "CIDR" => value.parse::<ipnet::IpNet>().is_ok(),
        "pve-ipv4-config" => {
            matches!(value, "dhcp" | "manual") || value.parse::<ipnet::Ipv4Net>().is_ok()
        }
        "IPv4Format/CIDR" => value.parse::<ipnet::Ipv4Net>().is_ok() || value == "dhcp",
        // Proxmox's own rules (PVE::JSONSchema), as lab.toml validation applies them.
        "pve-iface" => names::is_pve_iface(value),
        "pve-storage-id" => names::is_pve_storage_id(value),
        "pve-node" => names::is_dns_label(value),
        "dns-name" => value.split('.').all(names::is_dns_label),
        "pve-bridge-id" => {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        }
        "pve-configid" => is_configid(value, false),
        // PVE::AccessControl's formats: `name@realm`, tokens `name@realm!token`, role ids.
        "pve-userid" => is_userid(value),
        "pve-userid-list" => list_of(value, is_userid),
        "pve-tokenid-list" => list_of(value, |t| {
            t.rsplit_once('!').is_some_and(|(user, token)| {
                is_userid(user) && pattern_matches("[A-Za-z][A-Za-z0-9\\.\\-_]+", token)
            })
        }),
        "pve-roleid" => pattern_matches("[A-Za-z0-9\\.\\-_]+", value),
        "pve-roleid-list" => list_of(value, |r| pattern_matches("[A-Za-z0-9\\.\\-_]+", r)),
        "pve-priv-list" => list_of(value, |p| pattern_matches("[A-Za-z.]+", p)),
        "pve-vmid-list" => list_of(value, |id| {
            id.parse::<u32>()
                .is_ok_and(|n| (100..=999_999_999).contains(&n))
        }),
        // A systemd-like calendar event; the node's parser is not reproduced, its alphabet is.
        "pve-calendar-event" => {
            !value.trim().is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || " :,.-*/~".contains(c))
        }
        // PVE::Network::SDN's id rules: a letter, then letters and digits, 8 at most.
        "pve-sdn-zone-id" | "pve-sdn-vnet-id" => lab_bootstrap::model::is_sdn_id(value),
        // A subnet is named by its CIDR when made, by `zone-address-prefix` afterwards.
        "pve-sdn-subnet-id" => {
            value.parse::<ipnet::IpNet>().is_ok()
                || value.rsplitn(3, '-').collect::<Vec<_>>().len() == 3
        }
        "ip-list" => value
            .split([',', ';', ' '])
            .filter(|a| !a.is_empty())
            .all(|a| a.parse::<std::net::IpAddr>().is_ok()),
        "pve-node-list" => value.split([',', ';']).all(names::is_dns_label),
        // PVE::HA::Config: `node[:priority]`, comma-separated.
        "pve-ha-node-list" => value.split([',', ';', ' ']).all(|item| {
            let (node, priority) = item.split_once(':').unwrap_or((item, "0"));
            names::is_dns_label(node) && priority.parse::<u32>().is_ok()
        }),
        "pve-ha-resource-or-vm-id" => is_ha_resource_id(value) || value.parse::<u32>().is_ok(),
        "pve-ha-resource-id-list" => value.split([',', ';', ' ']).all(is_ha_resource_id),
        "pve-tag-list" => value
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .all(|t| pattern_matches("[a-z0-9_][a-z0-9_\\-\\+\\.]*", &t.to_ascii_lowercase())),
        _ => return check_typetext_keys(schema, value),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{value}` is not a valid {named}"))
    }
}

fn is_userid(value: &str) -> bool {
    value.len() <= 64
        && value.rsplit_once('@').is_some_and(|(name, realm)| {
            !name.is_empty()
                && !name.contains(|c: char| c.is_whitespace() || c == ':' || c == '@')
                && pattern_matches("[A-Za-z][A-Za-z0-9\\.\\-_]+", realm)
        })
}

fn list_of(value: &str, each: impl Fn(&str) -> bool) -> bool {
    let items: Vec<&str> = value
        .split([',', ';', ' '])
        .filter(|i| !i.is_empty())
        .collect();
    !items.is_empty() && items.into_iter().all(each)
}

/// `vm:211` or `ct:200`.
fn is_ha_resource_id(value: &str) -> bool {
    value
        .split_once(':')
        .is_some_and(|(kind, id)| matches!(kind, "vm" | "ct") && id.parse::<u32>().is_ok())
}

fn is_unicast_mac(value: &str) -> bool {
    let octets: Vec<&str> = value.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn is_configid(value: &str, dots: bool) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dots && c == '.'))
}

fn check_typetext_keys(schema: &Value, value: &str) -> Result<(), String> {
    let Some(typetext) = schema.get("typetext").and_then(Value::as_str) else {
        return Ok(());
    };
    // Only property strings made purely of `[key=<…>]` items are checkable this way.
    let keys: Vec<&str> = typetext
        .split_whitespace()
        .filter_map(|item| {
            let item = item.strip_prefix('[')?.trim_start_matches(',');
            item.split_once('=').map(|(k, _)| k)
        })
        .collect();
    let items = typetext.split_whitespace().count();
    if keys.is_empty() || keys.len() != items || keys.iter().any(|k| k.starts_with('<')) {
        return Ok(());
    }
    // `[[cputype=]<string>]` marks the default key: its value may come first without a key.
    let default_key = keys.iter().find_map(|k| k.strip_prefix('['));
    let keys: Vec<&str> = keys.iter().map(|k| k.trim_start_matches('[')).collect();
    for (i, part) in split_property_string(value).into_iter().enumerate() {
        let key = match part.split_once('=') {
            Some((k, _)) => k,
            None if i == 0 && default_key.is_some() => continue,
            None => &part,
        };
        if !keys.contains(&key) {
            return Err(format!(
                "unknown key `{key}` in `{value}` (expected {})",
                keys.join(", ")
            ));
        }
    }
    Ok(())
}
