//! The Proxmox side of `[storage]`: the role with the Proxmox CSI plugin's privileges, its
//! user, the ACL giving the user the role on `/`, and the user's API token without privilege
//! separation (the plugin's docs/install.md, v0.19.1: `pveum role add`, `pveum user add`,
//! `pveum aclmod / -user … -role …`, `pveum user token add … csi -privsep 0`). The user's comment
//! marks it as this lab's; the role is named after the lab. The token's secret is shown by the
//! API once: when the state directory has lost it, the token is replaced.

use serde_json::Value;

use super::client::{Method, ProxmoxApi};
use super::datacenter::{wire, DcCall, DcChange};
use super::desired::MANAGED_COMMENT;
use super::plan::{list, ChangeKind, PlanError};
use crate::model::Lab;
use crate::storage::{CsiIdentity, PRIVILEGES};

/// The user's comment: what marks it as `lab`'s.
pub fn user_comment(lab: &Lab) -> String {
    format!(
        "{MANAGED_COMMENT}: Proxmox CSI plugin of lab {}",
        lab.cluster.name
    )
}

/// What the node has of the lab's CSI objects.
#[derive(Debug, Default)]
struct Live {
    /// The role's privileges, when the role is there.
    role: Option<Vec<String>>,
    /// The user's comment, when the user is there.
    user: Option<String>,
    /// Whether the ACL giving the user the role on `/` is there.
    acl: bool,
    /// The token's `privsep`, when the token is there.
    token: Option<String>,
}

fn read(api: &dyn ProxmoxApi, id: &CsiIdentity) -> Result<Live, PlanError> {
    let mut live = Live::default();
    let text = |item: &Value, key: &str| item.get(key).and_then(wire);
    for role in list(api, "/access/roles")? {
        if text(&role, "roleid").as_deref() == Some(id.role.as_str()) {
            live.role = Some(privileges(&text(&role, "privs").unwrap_or_default()));
        }
    }
    for user in list(api, "/access/users")? {
        if text(&user, "userid").as_deref() == Some(id.user.as_str()) {
            live.user = Some(text(&user, "comment").unwrap_or_default());
        }
    }
    live.acl = list(api, "/access/acl")?.iter().any(|entry| {
        text(entry, "path").as_deref() == Some("/")
            && text(entry, "type").as_deref() == Some("user")
            && text(entry, "ugid").as_deref() == Some(id.user.as_str())
            && text(entry, "roleid").as_deref() == Some(id.role.as_str())
    });
    if live.user.is_some() {
        for token in list(api, &format!("/access/users/{}/token", id.user))? {
            if text(&token, "tokenid").as_deref() == Some(id.token.as_str()) {
                // Proxmox's default is privilege separation on.
                live.token = Some(text(&token, "privsep").unwrap_or_else(|| "1".to_owned()));
            }
        }
    }
    Ok(live)
}

/// Whether the lab's CSI user is there already (its volumes may then fill the budget).
pub fn is_set_up(api: &dyn ProxmoxApi, lab: &Lab) -> Result<bool, super::client::ApiError> {
    let id = CsiIdentity::of(lab);
    let users = api.get("/access/users")?;
    Ok(users
        .as_array()
        .into_iter()
        .flatten()
        .any(|user| user.get("userid").and_then(Value::as_str) == Some(id.user.as_str())))
}

/// A privilege list as the API gives it (comma- or space-separated), sorted.
fn privileges(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split([',', ' ', ';'])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

fn wanted_privileges() -> Vec<String> {
    privileges(&PRIVILEGES.join(","))
}

fn token_path(id: &CsiIdentity) -> String {
    format!("/access/users/{}/token/{}", id.user, id.token)
}

fn create_token(id: &CsiIdentity, comment: &str) -> DcCall {
    let mut call = DcCall::new(
        Method::Post,
        token_path(id),
        &[("privsep", "0"), ("comment", comment)],
    );
    call.gives_token = true;
    call
}

fn acl_call(id: &CsiIdentity, delete: bool) -> DcCall {
    let mut params = vec![
        ("path", "/"),
        ("roles", id.role.as_str()),
        ("users", id.user.as_str()),
        ("propagate", "1"),
    ];
    if delete {
        params.push(("delete", "1"));
    }
    DcCall::new(Method::Put, "/access/acl", &params)
}

fn change(
    action: ChangeKind,
    kind: &'static str,
    id: &str,
    note: &str,
    calls: Vec<DcCall>,
) -> DcChange {
    DcChange {
        action,
        kind,
        id: id.to_owned(),
        note: note.to_owned(),
        calls,
    }
}

/// What apply changes for `[storage]`: with it, the role, user, ACL and token made or mended
/// (`has_secret`: the state directory still holds the token's secret); without it, the lab's
/// ones removed.
pub fn plan(api: &dyn ProxmoxApi, lab: &Lab, has_secret: bool) -> Result<Vec<DcChange>, PlanError> {
    if lab.storage.is_none() {
        return destroy_plan(api, lab);
    }
    let id = CsiIdentity::of(lab);
    let live = read(api, &id)?;
    let comment = user_comment(lab);
    if let Some(theirs) = live.user.as_ref().filter(|c| !c.contains(comment.as_str())) {
        return Err(PlanError::Conflict {
            what: format!("user {}", id.user),
            why: format!("its comment is `{theirs}`"),
        });
    }
    let privs = PRIVILEGES.join(",");
    let mut changes = Vec::new();
    match &live.role {
        None => changes.push(change(
            ChangeKind::Create,
            "role",
            &id.role,
            "the Proxmox CSI plugin's privileges",
            vec![DcCall::new(
                Method::Post,
                "/access/roles",
                &[("roleid", id.role.as_str()), ("privs", privs.as_str())],
            )],
        )),
        Some(has) if *has != wanted_privileges() => changes.push(change(
            ChangeKind::Update,
            "role",
            &id.role,
            &format!("privileges are {}", has.join(",")),
            // Without `append`, the list replaces the role's.
            vec![DcCall::new(
                Method::Put,
                format!("/access/roles/{}", id.role),
                &[("privs", privs.as_str())],
            )],
        )),
        Some(_) => {}
    }
    if live.user.is_none() {
        changes.push(change(
            ChangeKind::Create,
            "user",
            &id.user,
            "no password: only its token logs in",
            vec![DcCall::new(
                Method::Post,
                "/access/users",
                &[("userid", id.user.as_str()), ("comment", comment.as_str())],
            )],
        ));
    }
    if !live.acl {
        changes.push(change(
            ChangeKind::Create,
            "acl",
            &format!("/ {} {}", id.user, id.role),
            "",
            vec![acl_call(&id, false)],
        ));
    }
    let token_id = id.token_id();
    let kept = "its secret is kept 0600 in the state directory, never shown";
    match live.token.as_deref() {
        None => changes.push(change(
            ChangeKind::Create,
            "token",
            &token_id,
            kept,
            vec![create_token(&id, &comment)],
        )),
        Some(_) if !has_secret => changes.push(change(
            ChangeKind::Replace,
            "token",
            &token_id,
            "the state directory has lost its secret, which the API shows only once",
            vec![
                DcCall::new(Method::Delete, token_path(&id), &[]),
                create_token(&id, &comment),
            ],
        )),
        Some(privsep) if privsep != "0" => changes.push(change(
            ChangeKind::Update,
            "token",
            &token_id,
            "the plugin's token has the user's privileges (privsep 0)",
            vec![DcCall::new(
                Method::Put,
                token_path(&id),
                &[("privsep", "0")],
            )],
        )),
        Some(_) => {}
    }
    Ok(changes)
}

/// Removing the lab's token, ACL, user and role, as far as they are there; a user of the same
/// name that is not the lab's is left alone, and with it the rest.
pub fn destroy_plan(api: &dyn ProxmoxApi, lab: &Lab) -> Result<Vec<DcChange>, PlanError> {
    let id = CsiIdentity::of(lab);
    let live = read(api, &id)?;
    let comment = user_comment(lab);
    if live
        .user
        .as_ref()
        .is_some_and(|c| !c.contains(comment.as_str()))
    {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    if live.token.is_some() {
        let calls = vec![DcCall::new(Method::Delete, token_path(&id), &[])];
        changes.push(change(
            ChangeKind::Delete,
            "token",
            &id.token_id(),
            "",
            calls,
        ));
    }
    if live.acl {
        changes.push(change(
            ChangeKind::Delete,
            "acl",
            &format!("/ {} {}", id.user, id.role),
            "",
            vec![acl_call(&id, true)],
        ));
    }
    if live.user.is_some() {
        let calls = vec![DcCall::new(
            Method::Delete,
            format!("/access/users/{}", id.user),
            &[],
        )];
        changes.push(change(ChangeKind::Delete, "user", &id.user, "", calls));
    }
    if live.role.is_some() {
        let calls = vec![DcCall::new(
            Method::Delete,
            format!("/access/roles/{}", id.role),
            &[],
        )];
        changes.push(change(ChangeKind::Delete, "role", &id.role, "", calls));
    }
    Ok(changes)
}
