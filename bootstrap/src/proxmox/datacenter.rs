//! Changes to objects of the Proxmox datacenter rather than of the node: roles, users, ACLs,
//! API tokens (`/access`) and backup jobs (`/cluster/backup`). `csi.rs` and `vzdump.rs` decide
//! them; this shows and makes them. Each change is the API calls that make it, so `plan` shows
//! exactly what `apply` sends.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use super::apply::ApplyError;
use super::client::{ApiError, Method, ProxmoxApi};
use super::plan::ChangeKind;
use crate::storage::TokenSecret;

/// One API call of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcCall {
    /// POST, PUT or DELETE.
    pub method: Method,
    /// The API path.
    pub path: String,
    /// The parameters, in the order sent.
    pub params: Vec<(String, String)>,
    /// The call creates an API token: its answer carries the secret, shown this once.
    pub gives_token: bool,
}

impl DcCall {
    /// A call that gives no token.
    pub fn new(method: Method, path: impl Into<String>, params: &[(&str, &str)]) -> Self {
        Self {
            method,
            path: path.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            gives_token: false,
        }
    }
}

/// One change to one datacenter object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcChange {
    /// Create, update, replace or delete.
    pub action: ChangeKind,
    /// What sort of object: `role`, `user`, `acl`, `token`, `backup job`.
    pub kind: &'static str,
    /// Its id (`lab-csi-homelab@pve!csi`).
    pub id: String,
    /// Why, for a replacement; what it holds, for the rest (shown under the change).
    pub note: String,
    /// The calls that make it, in order.
    pub calls: Vec<DcCall>,
}

/// The datacenter part of plan: one block per change, then the count.
pub fn render(changes: &[DcChange]) -> String {
    let mut out = String::new();
    if changes.is_empty() {
        return out;
    }
    let _ = writeln!(out, "lab-bootstrap will change the Proxmox datacenter:\n");
    for c in changes {
        let (sign, verb) = match c.action {
            ChangeKind::Create => ("+", "will be created"),
            ChangeKind::Update => ("~", "will be updated in place"),
            ChangeKind::Replace => ("-/+", "must be replaced"),
            ChangeKind::Delete => ("-", "will be destroyed"),
        };
        let _ = writeln!(out, "  # {} {} {verb}", c.kind, c.id);
        let _ = writeln!(out, "  {sign} {} \"{}\"", c.kind, c.id);
        if !c.note.is_empty() {
            let _ = writeln!(out, "      ({})", c.note);
        }
        for call in &c.calls {
            let params: Vec<String> = call
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                out,
                "      {} {} {}",
                call.method.as_str(),
                call.path,
                params.join(" ")
            );
        }
        let _ = writeln!(out);
    }
    let count = |a: ChangeKind| changes.iter().filter(|c| c.action == a).count();
    let _ = writeln!(
        out,
        "Datacenter: {} to add, {} to change, {} to replace, {} to destroy.",
        count(ChangeKind::Create),
        count(ChangeKind::Update),
        count(ChangeKind::Replace),
        count(ChangeKind::Delete)
    );
    out
}

/// Makes `changes` in order, stopping at the first failure; returns the secret of a token it
/// created (never printed: the progress lines name the token only).
pub fn apply(
    api: &dyn ProxmoxApi,
    changes: &[DcChange],
    progress: &mut dyn Write,
) -> Result<Option<TokenSecret>, ApplyError> {
    let mut secret = None;
    for c in changes {
        let label = format!("{} {}", c.kind, c.id);
        let _ = writeln!(progress, "{label}: {}", verb(c.action));
        for call in &c.calls {
            let fail = |source| ApplyError {
                step: format!("{label}: {} {}", call.method.as_str(), call.path),
                source,
            };
            let answer = api
                .call(call.method, &call.path, &call.params)
                .map_err(fail)?;
            if call.gives_token {
                let value = answer.get("value").and_then(Value::as_str).ok_or_else(|| {
                    fail(ApiError::Refused {
                        method: call.method.as_str(),
                        path: call.path.clone(),
                        message: "the answer holds no token secret (`value`)".to_owned(),
                    })
                })?;
                secret = Some(TokenSecret::new(value.to_owned()));
            }
        }
        let _ = writeln!(progress, "{label}: done");
    }
    Ok(secret)
}

fn verb(action: ChangeKind) -> &'static str {
    match action {
        ChangeKind::Create => "creating",
        ChangeKind::Update => "updating in place",
        ChangeKind::Replace => "replacing",
        ChangeKind::Delete => "destroying",
    }
}

/// A value of an API answer in wire form: booleans as 0 and 1, objects (a property string the
/// API answers parsed) as `key=value,…` in key order.
pub(super) fn wire(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim_end().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        Value::Object(map) => Some(
            map.iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", wire(v)?)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}
