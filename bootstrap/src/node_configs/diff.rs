//! The difference between two Talos machine configs as `plan` shows it: by document (the
//! `v1alpha1` config, then each named document such as `LinkConfig net1`) and by field path
//! (`machine.kubelet.image`, `addresses[0].address`), with secrets masked.
//!
//! The masking rule: a field is secret when its own key, or any key above it, contains `key`,
//! `token` or `secret` (any case), or is `trustdinfo`. That covers every private part Talos
//! configs carry (`ca.key`, `serviceAccount.key`, `machine.token`, `cluster.token`,
//! `cluster.secret`, `secretboxEncryptionSecret`, the bundle's `secrets` and `trustdinfo`);
//! certificates (`crt`) are public and shown abbreviated. A secret field's value is never
//! shown, only that it was added, removed or changed.

use serde_norway::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Values longer than this are shown by their start and length (certificates).
const SHOWN_CHARS: usize = 48;

/// A machine config that is not YAML.
#[derive(Debug, thiserror::Error)]
#[error("not a YAML machine config: {0}")]
pub struct DiffError(String);

/// One field that differs; values as shown (a secret's never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// Its path in the document, `machine.kubelet.image`.
    pub path: String,
    /// Its value before, `None` when it was not there.
    pub old: Option<String>,
    /// Its value now, `None` when it is gone.
    pub new: Option<String>,
    /// Whether it is secret: then `old` and `new` are only markers.
    pub secret: bool,
}

/// What changed in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChange {
    /// `v1alpha1` for the main config, else `Kind name` (`LinkConfig net1`).
    pub document: String,
    /// Whether the document is new, gone, or changed in place.
    pub kind: ChangeKind,
    /// The fields that differ (all of a new or gone document's).
    pub fields: Vec<FieldChange>,
}

/// How a document changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Only in the new config.
    Added,
    /// Only in the old one.
    Removed,
    /// In both, with different fields.
    Changed,
}

/// Whether a field under `path` (its keys from the top) is secret, by the rule above.
pub fn is_secret(path: &[&str]) -> bool {
    path.iter().any(|key| {
        let key = key.to_ascii_lowercase();
        key == "trustdinfo" || ["key", "token", "secret"].iter().any(|s| key.contains(s))
    })
}

/// The documents of `old` and `new` that differ, field by field, in `new`'s order (then the
/// documents only `old` has).
pub fn diff(old: &str, new: &str) -> Result<Vec<DocumentChange>, DiffError> {
    let old = documents(old)?;
    let new = documents(new)?;
    let mut out = Vec::new();
    for (name, document) in &new {
        match old.iter().find(|(n, _)| n == name) {
            None => out.push(DocumentChange {
                document: name.clone(),
                kind: ChangeKind::Added,
                fields: fields_between(&BTreeMap::new(), &flatten(document)),
            }),
            Some((_, before)) => {
                let fields = fields_between(&flatten(before), &flatten(document));
                if !fields.is_empty() {
                    out.push(DocumentChange {
                        document: name.clone(),
                        kind: ChangeKind::Changed,
                        fields,
                    });
                }
            }
        }
    }
    for (name, document) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(DocumentChange {
                document: name.clone(),
                kind: ChangeKind::Removed,
                fields: fields_between(&flatten(document), &BTreeMap::new()),
            });
        }
    }
    Ok(out)
}

/// `changes` as plan prints them, each line indented by `indent`.
pub fn render(changes: &[DocumentChange], indent: &str) -> String {
    let mut out = String::new();
    for change in changes {
        let sign = match change.kind {
            ChangeKind::Added => "+ ",
            ChangeKind::Removed => "- ",
            ChangeKind::Changed => "",
        };
        let _ = writeln!(out, "{indent}{sign}{}:", change.document);
        for field in &change.fields {
            let line = match (&field.old, &field.new) {
                (None, Some(new)) => format!("+ {} = {new}", field.path),
                (Some(old), None) => format!("- {} = {old}", field.path),
                (Some(_), Some(_)) if field.secret => {
                    format!("~ {} (secret, changed)", field.path)
                }
                (Some(old), Some(new)) => format!("~ {}: {old} → {new}", field.path),
                (None, None) => continue,
            };
            let _ = writeln!(out, "{indent}    {line}");
        }
    }
    out
}

/// The documents of a config, each under its name; a name seen twice gets `#2`, `#3`.
fn documents(yaml: &str) -> Result<Vec<(String, Value)>, DiffError> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| DiffError(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut name = match (text("kind"), text("name")) {
            (Some(kind), Some(name)) => format!("{kind} {name}"),
            (Some(kind), None) => kind,
            (None, _) => text("version").unwrap_or_else(|| "document".to_owned()),
        };
        let numbered = format!("{name} #");
        let seen = out
            .iter()
            .filter(|(n, _)| *n == name || n.starts_with(&numbered))
            .count();
        if seen > 0 {
            name = format!("{name} #{}", seen + 1);
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Every leaf of `value` by its path, with whether it is secret.
fn flatten(value: &Value) -> BTreeMap<String, (String, bool)> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, (String, bool)>) {
        let joined = |path: &[String]| {
            let mut text = String::new();
            for segment in path {
                if !text.is_empty() && !segment.starts_with('[') {
                    text.push('.');
                }
                text.push_str(segment);
            }
            text
        };
        match value {
            Value::Mapping(map) if !map.is_empty() => {
                for (key, item) in map {
                    path.push(scalar(key));
                    walk(item, path, out);
                    path.pop();
                }
            }
            Value::Sequence(items) if !items.is_empty() => {
                for (index, item) in items.iter().enumerate() {
                    path.push(format!("[{index}]"));
                    walk(item, path, out);
                    path.pop();
                }
            }
            Value::Tagged(tagged) => walk(&tagged.value, path, out),
            leaf => {
                let keys: Vec<&str> = path
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(String::as_str)
                    .collect();
                out.insert(joined(path), (scalar(leaf), is_secret(&keys)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn fields_between(
    old: &BTreeMap<String, (String, bool)>,
    new: &BTreeMap<String, (String, bool)>,
) -> Vec<FieldChange> {
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (before, after) = (old.get(path), new.get(path));
            if before.map(|(v, _)| v) == after.map(|(v, _)| v) {
                return None;
            }
            let secret = before.or(after).is_some_and(|(_, secret)| *secret);
            let shown = |value: Option<&(String, bool)>| {
                value.map(|(v, _)| {
                    if secret {
                        "(secret)".to_owned()
                    } else {
                        abbreviated(v)
                    }
                })
            };
            Some(FieldChange {
                path: path.clone(),
                old: shown(before),
                new: shown(after),
                secret,
            })
        })
        .collect()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Mapping(_) => "{}".to_owned(),
        Value::Sequence(_) => "[]".to_owned(),
        Value::Tagged(tagged) => scalar(&tagged.value),
    }
}

fn abbreviated(value: &str) -> String {
    let length = value.chars().count();
    if length <= SHOWN_CHARS {
        return value.to_owned();
    }
    let start: String = value.chars().take(SHOWN_CHARS / 2).collect();
    format!("{start}… ({length} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masking_rule() {
        for secret in [
            &["machine", "token"][..],
            &["machine", "ca", "key"],
            &["cluster", "secretboxEncryptionSecret"],
            &["cluster", "serviceAccount", "key"],
            &["secrets", "bootstraptoken"],
            &["trustdinfo", "anything"],
            &["cluster", "secret"],
            &["cluster", "aescbcEncryptionSecret"],
        ] {
            assert!(is_secret(secret), "{secret:?}");
        }
        for public in [
            &["machine", "ca", "crt"][..],
            &["machine", "kubelet", "image"],
            &["cluster", "id"],
            &["machine", "install", "image"],
        ] {
            assert!(!is_secret(public), "{public:?}");
        }
    }

    #[test]
    fn fields_by_document_and_path_with_secrets_masked() {
        let old = "version: v1alpha1\nmachine:\n  token: abc.oldtoken\n  kubelet:\n    image: k:v1\n  certSANs: [10.0.0.1]\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: net1\nup: true\n";
        let new = "version: v1alpha1\nmachine:\n  token: abc.newtoken\n  kubelet:\n    image: k:v2\n  certSANs: [10.0.0.1, 10.0.0.2]\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp1\n";
        let changes = diff(old, new).unwrap();
        let text = render(&changes, "");
        assert_eq!(
            text,
            "v1alpha1:\n    + machine.certSANs[1] = 10.0.0.2\n    ~ machine.kubelet.image: k:v1 → k:v2\n    ~ machine.token (secret, changed)\n+ HostnameConfig:\n    + apiVersion = v1alpha1\n    + hostname = cp1\n    + kind = HostnameConfig\n- LinkConfig net1:\n    - apiVersion = v1alpha1\n    - kind = LinkConfig\n    - name = net1\n    - up = true\n"
        );
        assert!(!text.contains("oldtoken") && !text.contains("newtoken"));
        // A whole secret section added: none of its values shown.
        let added = diff(
            "version: v1alpha1\n",
            "version: v1alpha1\ntrustdinfo:\n  token: t0p\n",
        )
        .unwrap();
        let text = render(&added, "");
        assert!(text.contains("+ trustdinfo.token = (secret)"), "{text}");
        assert!(!text.contains("t0p"), "{text}");
        assert!(diff(new, new).unwrap().is_empty());
    }
}
