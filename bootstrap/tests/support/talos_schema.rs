//! The Talos 1.13 config schema of reference/, applied per document as Talos itself does.

use lab_tests::workspace;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

const SCHEMA: &str = "talos/config.schema.v1.13.9.json";

/// The schema's document kinds: (`apiVersion`, `kind`) to the definition that describes it; the
/// `v1alpha1` config (no `kind`) under (`v1alpha1`, "").
pub struct TalosSchema {
    root: Value,
    kinds: HashMap<(String, String), String>,
}

impl TalosSchema {
    pub fn load() -> Self {
        let path = workspace::reference_path(SCHEMA);
        let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut kinds = HashMap::new();
        for alternative in root["oneOf"].as_array().unwrap() {
            let reference = alternative["$ref"].as_str().unwrap();
            let name = reference.strip_prefix("#/$defs/").unwrap().to_owned();
            let properties = &root["$defs"][&name]["properties"];
            let first = |key: &str| properties[key]["enum"][0].as_str().map(str::to_owned);
            let key = match (first("apiVersion"), first("kind"), first("version")) {
                (Some(api), Some(kind), _) => (api, kind),
                (None, None, Some(version)) => (version, String::new()),
                other => panic!("{name}: unexpected document shape {other:?}"),
            };
            kinds.insert(key, name);
        }
        Self { root, kinds }
    }

    /// Errors of `document` against the definition its `apiVersion`/`kind` (or `version`) names.
    pub fn errors(&self, document: &Value) -> Vec<String> {
        let key = match document.get("kind") {
            Some(kind) => (
                document["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                kind.as_str().unwrap_or_default().to_owned(),
            ),
            None => (
                document["version"].as_str().unwrap_or_default().to_owned(),
                String::new(),
            ),
        };
        let Some(definition) = self.kinds.get(&key) else {
            return vec![format!("no document kind {key:?} in the schema")];
        };
        let mut schema = self.root.clone();
        let object = schema.as_object_mut().unwrap();
        object.remove("oneOf");
        object.insert("$ref".into(), format!("#/$defs/{definition}").into());
        let validator = jsonschema::validator_for(&schema).unwrap();
        validator
            .iter_errors(document)
            .map(|e| format!("{definition} at {}: {e}", e.instance_path()))
            .collect()
    }
}

pub fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}
