//! The `shell` stage plugin.
//!
//! ```toml
//! [stages.count]
//! plugin = "shell"
//! inputs = { text = "fetch.text" }
//! params = { run = "wc -w < $LEO_INPUT_TEXT/*.txt > $LEO_OUTPUT_COUNT/words", outputs = ["count"] }
//! ```
//!
//! The command runs with `sh -c` in the attempt's working folder. It sees
//! `LEO_INPUT_<NAME>` (input paths), `LEO_OUTPUT_<NAME>` (an empty folder per declared output),
//! `LEO_CHECKPOINT_DIR`, and, when resuming, `LEO_RESUME_FROM` and `LEO_RESUME_STEP`.
//! Names are upper-cased with `-` turned into `_`. A non-zero exit fails the attempt.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use leo_plugin::{kind, param_str, Emitter, ExitWith, Invocation, ParamError, Plugin};
use serde_json::Value;

pub struct Shell;

const KNOWN_PARAMS: &[&str] = &["run", "outputs", "shell"];

impl Plugin for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        let obj = params
            .as_object()
            .ok_or_else(|| ParamError::new("", "params must be a table"))?;
        leo_plugin::reject_unknown_params(obj, "shell", KNOWN_PARAMS)?;
        match param_str(params, "run")? {
            Some(cmd) if !cmd.trim().is_empty() => {}
            Some(_) => return Err(ParamError::new("run", "the command is empty")),
            None => return Err(ParamError::new("run", "missing: the shell command to run")),
        }
        param_str(params, "shell")?;
        let mut outputs = Vec::new();
        match params.get("outputs") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(name) = item.as_str() else {
                        return Err(ParamError::new(
                            format!("outputs.{i}"),
                            format!("output names are strings, found {}", kind(item)),
                        ));
                    };
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(ParamError::new(
                            "outputs",
                            format!(
                                "`{name}` is not a valid output name (letters, digits, `_`, `-`)"
                            ),
                        ));
                    }
                    if outputs.iter().any(|o| o == name) {
                        return Err(ParamError::new(
                            "outputs",
                            format!("output `{name}` is listed twice"),
                        ));
                    }
                    outputs.push(name.to_string());
                }
            }
            Some(other) => {
                return Err(ParamError::new(
                    "outputs",
                    format!("must be an array of names, found {}", kind(other)),
                ))
            }
        }
        Ok(outputs)
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let command = inv
            .params
            .get("run")
            .and_then(Value::as_str)
            .context("params.run is missing")?;
        let shell = inv
            .params
            .get("shell")
            .and_then(Value::as_str)
            .unwrap_or("/bin/sh");
        let mut cmd = Command::new(shell);
        cmd.arg("-c").arg(command).current_dir(&inv.work_dir);
        for (name, input) in &inv.inputs {
            cmd.env(format!("LEO_INPUT_{}", env_name(name)), &input.path);
        }
        for name in &inv.outputs {
            let dir = inv.output_dir.join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cmd.env(format!("LEO_OUTPUT_{}", env_name(name)), &dir);
        }
        cmd.env("LEO_CHECKPOINT_DIR", &inv.checkpoint_dir);
        if let Some(r) = &inv.resume_from {
            cmd.env("LEO_RESUME_FROM", &r.path)
                .env("LEO_RESUME_STEP", r.step.to_string());
        }
        // SAFETY: prctl is async-signal-safe; the command dies with this worker.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let status = cmd
            .status()
            .with_context(|| format!("starting `{shell} -c …`"))?;
        if !status.success() {
            match status.code() {
                Some(code) => return Err(ExitWith(u8::try_from(code).unwrap_or(1)).into()),
                // As shells report it: 128 + the signal number.
                None => match std::os::unix::process::ExitStatusExt::signal(&status) {
                    Some(sig) => {
                        eprintln!("leo shell: the command was killed by signal {sig}");
                        return Err(ExitWith(u8::try_from(128 + sig).unwrap_or(255)).into());
                    }
                    None => bail!("the command ended abnormally ({status})"),
                },
            }
        }
        for name in &inv.outputs {
            events.output(name, inv.output_dir.join(name))?;
        }
        Ok(())
    }
}

fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_checks_params() {
        let p = Shell;
        assert_eq!(
            p.describe(&json!({"run": "true", "outputs": ["a", "b-c"]}))
                .unwrap(),
            vec!["a", "b-c"]
        );
        assert_eq!(p.describe(&json!({"run": 3})).unwrap_err().field, "run");
        assert_eq!(p.describe(&json!({})).unwrap_err().field, "run");
        assert_eq!(
            p.describe(&json!({"run": "x", "outputs": "a"}))
                .unwrap_err()
                .field,
            "outputs"
        );
        assert_eq!(
            p.describe(&json!({"run": "x", "outputs": [1]}))
                .unwrap_err()
                .field,
            "outputs.0"
        );
        assert_eq!(
            p.describe(&json!({"run": "x", "cmd": "y"}))
                .unwrap_err()
                .field,
            "cmd"
        );
    }

    #[test]
    fn env_names_are_shell_friendly() {
        assert_eq!(env_name("token-shards"), "TOKEN_SHARDS");
    }
}
