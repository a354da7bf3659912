//! Secrets: values that must reach a stage's process and nothing else (not the state, logs,
//! lineage or artifacts).
//!
//! A workflow names them in `env` as `${secret.NAME}`; the engine fills in its own environment
//! variable NAME when it starts the stage. Their values, and the values of leo's own environment
//! variables whose names say they are credentials (`…SECRET…`, `…TOKEN…`, `…PASSWORD…`,
//! `…_KEY`, `…API_KEY…`), are masked as `***` in everything the engine stores from a stage: its
//! log, the failure message built from the log's tail, and recorded events.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// Values shorter than this are not masked (they would mask ordinary text).
const MIN_SECRET_LEN: usize = 6;

#[derive(Debug, Default, Clone)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

pub use leo_spec::looks_secret;

impl Secrets {
    /// The credential-looking variables of this process's environment.
    pub fn from_environment() -> Secrets {
        let mut s = Secrets::default();
        for (name, value) in std::env::vars() {
            if looks_secret(&name) {
                s.add(value);
            }
        }
        s
    }

    fn add(&mut self, value: String) {
        if value.len() >= MIN_SECRET_LEN && !self.values.contains(&value) {
            self.values.push(value);
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// A stage's environment with every `${secret.NAME}` filled in from this process's
    /// environment; the filled-in values join the masked ones.
    pub fn resolve(&mut self, env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (key, value) in env {
            let mut resolved = String::new();
            let mut rest = value.as_str();
            while let Some(start) = rest.find("${secret.") {
                resolved.push_str(&rest[..start]);
                let after = &rest[start + "${secret.".len()..];
                let Some(end) = after.find('}') else {
                    bail!("env {key}: unclosed `${{secret.`");
                };
                let name = &after[..end];
                let Ok(secret) = std::env::var(name) else {
                    bail!(
                        "env {key} needs the secret `{name}`, which is not set in leo's environment \
                         (export {name}=… before `leo run`)"
                    );
                };
                self.add(secret.clone());
                resolved.push_str(&secret);
                rest = &after[end + 1..];
            }
            resolved.push_str(rest);
            out.insert(key.clone(), resolved);
        }
        Ok(out)
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }

    /// Bytes of a log: masked where they contain a secret (as text), unchanged otherwise.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let hit = self
            .values
            .iter()
            .any(|v| bytes.windows(v.len()).any(|w| w == v.as_bytes()));
        if !hit {
            return std::borrow::Cow::Borrowed(bytes);
        }
        std::borrow::Cow::Owned(self.redact(&String::from_utf8_lossy(bytes)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_resolved_for_the_stage_and_masked_everywhere_else() {
        std::env::set_var("LEO_UNIT_TEST_JUDGE", "sk-live-123456");
        let mut s = Secrets::default();
        let env = BTreeMap::from([
            (
                "KEY".to_string(),
                "${secret.LEO_UNIT_TEST_JUDGE}".to_string(),
            ),
            (
                "URL".to_string(),
                "https://u:${secret.LEO_UNIT_TEST_JUDGE}@h".to_string(),
            ),
            ("PLAIN".to_string(), "x".to_string()),
        ]);
        let resolved = s.resolve(&env).unwrap();
        assert_eq!(resolved["KEY"], "sk-live-123456");
        assert_eq!(resolved["URL"], "https://u:sk-live-123456@h");
        assert_eq!(s.redact("key=sk-live-123456!"), "key=***!");
        assert_eq!(&*s.redact_bytes(b"a sk-live-123456 b"), b"a *** b");
        assert_eq!(&*s.redact_bytes(b"nothing here"), b"nothing here");
        let missing = BTreeMap::from([(
            "K".to_string(),
            "${secret.LEO_NOT_SET_ANYWHERE}".to_string(),
        )]);
        let err = s.resolve(&missing).unwrap_err();
        assert!(format!("{err}").contains("LEO_NOT_SET_ANYWHERE"));
    }
}
