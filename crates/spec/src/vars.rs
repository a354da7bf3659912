//! `${vars.NAME}` interpolation. Deliberately small: no expressions, no nesting.
//! A string that is exactly one `${vars.NAME}` takes the variable's TOML type; elsewhere the
//! variable is formatted into the string. `${workflow.dir}` is the workflow file's folder.

use std::collections::BTreeMap;

pub(crate) struct Vars {
    pub values: BTreeMap<String, toml::Value>,
    pub workflow_dir: String,
}

impl Vars {
    /// Substitutes every `${...}` in `value`, recursively. Errors carry the sub-path of the bad
    /// string (relative to `value`) and a message.
    pub fn substitute(&self, value: &toml::Value) -> Result<toml::Value, (Vec<String>, String)> {
        match value {
            toml::Value::String(s) => self.substitute_str(s).map_err(|m| (Vec::new(), m)),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    self.substitute(v).map_err(|(mut p, m)| {
                        p.insert(0, i.to_string());
                        (p, m)
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(toml::Value::Array),
            toml::Value::Table(table) => {
                let mut out = toml::Table::new();
                for (k, v) in table {
                    let v = self.substitute(v).map_err(|(mut p, m)| {
                        p.insert(0, k.clone());
                        (p, m)
                    })?;
                    out.insert(k.clone(), v);
                }
                Ok(toml::Value::Table(out))
            }
            other => Ok(other.clone()),
        }
    }

    pub fn substitute_str(&self, s: &str) -> Result<toml::Value, String> {
        self.substitute_text(s, false)
    }

    /// For `env` values: like [`Vars::substitute_str`], and `${secret.NAME}` stays as written.
    /// The engine puts the value of its own environment variable NAME there when it starts the
    /// stage, so the secret never reaches the stored workflow, fingerprints or the state.
    pub fn substitute_env_str(&self, s: &str) -> Result<toml::Value, String> {
        self.substitute_text(s, true)
    }

    fn substitute_text(&self, s: &str, keep_secrets: bool) -> Result<toml::Value, String> {
        let lookup = |name: &str| -> Result<toml::Value, String> {
            let name = name.trim();
            if let Some(secret) = name.strip_prefix("secret.") {
                if !keep_secrets {
                    return Err(format!(
                        "`${{secret.{secret}}}` is only allowed in `env` values (secrets never go into params)"
                    ));
                }
                let valid = !secret.is_empty()
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !secret.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!(
                        "`${{secret.{secret}}}`: a secret names an environment variable of leo's (letters, digits, _)"
                    ));
                }
                return Ok(toml::Value::String(format!("${{secret.{secret}}}")));
            }
            self.lookup(name)
        };
        if !s.contains("${") {
            return Ok(toml::Value::String(s.to_string()));
        }
        let trimmed = s.trim();
        if trimmed.starts_with("${") && trimmed.ends_with('}') && trimmed.matches("${").count() == 1
        {
            let name = &trimmed[2..trimmed.len() - 1];
            return lookup(name);
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            match lookup(&after[..end])? {
                toml::Value::String(v) => out.push_str(&v),
                other => out.push_str(&other.to_string()),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(toml::Value::String(out))
    }

    fn lookup(&self, name: &str) -> Result<toml::Value, String> {
        let name = name.trim();
        if name == "workflow.dir" {
            return Ok(toml::Value::String(self.workflow_dir.clone()));
        }
        let Some(var) = name.strip_prefix("vars.") else {
            return Err(format!(
                "`${{{name}}}` is not a known variable; use `${{vars.NAME}}`, `${{workflow.dir}}` or, in env, `${{secret.NAME}}`"
            ));
        };
        self.values.get(var).cloned().ok_or_else(|| {
            let known: Vec<_> = self.values.keys().map(String::as_str).collect();
            format!(
                "variable `{var}` is not defined in [vars] (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut values = BTreeMap::new();
        values.insert("n".into(), toml::Value::Integer(3));
        values.insert("who".into(), toml::Value::String("Welt".into()));
        Vars {
            values,
            workflow_dir: "/w".into(),
        }
    }

    #[test]
    fn whole_string_keeps_type() {
        assert_eq!(
            vars().substitute_str("${vars.n}").unwrap(),
            toml::Value::Integer(3)
        );
    }

    #[test]
    fn embedded_is_formatted() {
        assert_eq!(
            vars()
                .substitute_str("hallo ${vars.who} x${vars.n} ${workflow.dir}/a")
                .unwrap(),
            toml::Value::String("hallo Welt x3 /w/a".into())
        );
    }

    #[test]
    fn unknown_is_an_error() {
        let err = vars().substitute_str("${vars.nope}").unwrap_err();
        assert!(err.contains("`nope` is not defined"), "{err}");
        assert!(vars().substitute_str("${env.HOME}").is_err());
    }
}

/// Whether an environment variable's name says it holds a credential (`…SECRET…`, `…TOKEN…`,
/// `…PASSWORD…`, `…API_KEY…`, `…_KEY`, `…CREDENTIAL…`): such `env` entries must take their value
/// from `${secret.NAME}`, and the engine masks such variables of its own environment in logs.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.contains("SECRET")
        || n.contains("TOKEN")
        || n.contains("PASSWORD")
        || n.contains("PASSWD")
        || n.contains("API_KEY")
        || n.ends_with("_KEY")
        || n.contains("CREDENTIAL")
}

#[cfg(test)]
mod secret_name_tests {
    use super::looks_secret;

    #[test]
    fn credential_names_are_recognised() {
        for n in [
            "AWS_SECRET_ACCESS_KEY",
            "HF_TOKEN",
            "OPENAI_API_KEY",
            "PGPASSWORD",
            "SSH_KEY",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "AWS_REGION",
            "CUDA_VISIBLE_DEVICES",
            "KEYBOARD",
        ] {
            assert!(!looks_secret(n), "{n}");
        }
    }
}
