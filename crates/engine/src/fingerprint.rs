//! Stage fingerprints: SHA-256 over canonical JSON of what determines a stage's results —
//! plugin name and version, params, env, input artifact digests and the fingerprints of
//! order-only dependencies. Never paths, hosts or times.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::catalog::PluginInfo;

#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub hash: String,
    /// The canonical payload, stored so a later plan can name what changed.
    pub payload: Value,
}

impl Fingerprint {
    pub fn compute(
        plugin: &PluginInfo,
        params: &Value,
        env: &BTreeMap<String, String>,
        inputs: &BTreeMap<String, String>,
        needs: &BTreeMap<String, String>,
    ) -> Fingerprint {
        // serde_json's map is ordered by key, so this serialisation is canonical.
        let payload = json!({
            "plugin": { "name": plugin.name, "version": plugin.version },
            "params": params,
            "env": env,
            "inputs": inputs,
            "needs": needs,
        });
        let hash = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(payload.to_string().as_bytes()))
        );
        Fingerprint { hash, payload }
    }

    pub fn canonical_json(&self) -> String {
        self.payload.to_string()
    }
}

/// Dotted paths of the fields that differ between two payloads, with old and new values.
pub fn diff_fields(old: &Value, new: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    diff(String::new(), Some(old), Some(new), &mut out);
    out
}

fn diff(
    path: String,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(p, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a != b => out.push((path, a.cloned(), b.cloned())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str) -> PluginInfo {
        PluginInfo {
            name: "shell".into(),
            version: version.into(),
            outputs: vec![],
            command: vec![],
            builtin: true,
            wants_run_context: false,
            estimate: None,
        }
    }

    #[test]
    fn same_inputs_same_hash_and_diff_names_fields() {
        let env = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        inputs.insert("x".to_string(), "sha256:aa".to_string());
        let a = Fingerprint::compute(
            &info("1"),
            &json!({"n": 1, "run": "echo"}),
            &env,
            &inputs,
            &BTreeMap::new(),
        );
        let b = Fingerprint::compute(
            &info("1"),
            &json!({"run": "echo", "n": 1}),
            &env,
            &inputs,
            &BTreeMap::new(),
        );
        assert_eq!(a.hash, b.hash);
        let c = Fingerprint::compute(
            &info("2"),
            &json!({"n": 2, "run": "echo"}),
            &env,
            &inputs,
            &BTreeMap::new(),
        );
        assert_ne!(a.hash, c.hash);
        let fields: Vec<String> = diff_fields(&a.payload, &c.payload)
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(fields, vec!["params.n", "plugin.version"]);
    }
}
