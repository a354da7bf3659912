//! The stage API, shared by the engine and every plugin.
//!
//! A stage attempt is one process. The engine writes an [`Invocation`] (JSON) and starts the
//! worker: `leo worker NAME INVOCATION.json` for built-ins, `PATH run INVOCATION.json` for
//! external plugins (`plugin = "exec:PATH"`). The worker prints [`Event`]s as JSON lines on
//! stdout (anything else on stdout/stderr is kept as log) and exits 0 on success.
//!
//! Before anything runs, the engine asks each plugin to check its params and name its outputs:
//! built-ins through [`Plugin::describe`], external plugins as `PATH describe` with the params
//! (JSON) on stdin, answering a [`DescribeReply`] on stdout (exit 0) or a [`ParamError`] (exit 1).
//!
//! SIGTERM asks a worker to stop: write a checkpoint if it can, then exit. SIGKILL follows after
//! a grace period.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod context;
pub use context::*;
pub mod estimate;
pub use estimate::{Estimate, StorageItem};

/// Bumped when the invocation or event format changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Environment variable holding the path of the invocation file (also passed as an argument).
pub const INVOCATION_ENV: &str = "LEO_INVOCATION";

/// Environment variable holding the engine's pid, so a worker can tie its life to the engine's.
pub const ENGINE_PID_ENV: &str = "LEO_ENGINE_PID";

/// Everything a worker needs to run one attempt of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub protocol: u32,
    pub run_id: String,
    pub stage: String,
    /// 1-based attempt number within the run.
    pub attempt: u32,
    pub plugin: String,
    pub params: Value,
    /// Input name -> materialised artifact. Read-only: the files may be shared with other stages.
    pub inputs: BTreeMap<String, InputArtifact>,
    /// Output names the plugin declared in `describe`; each must be reported by an `output` event.
    pub outputs: Vec<String>,
    /// Where outputs go: `output_dir/NAME` (a file or folder) is taken as output `NAME` when
    /// no `output` event names another path. Today this is the attempt folder itself.
    pub output_dir: PathBuf,
    /// Where to write checkpoints (created by the plugin on first use): write
    /// `checkpoint_dir/step-N/` completely, then emit a `checkpoint` event.
    pub checkpoint_dir: PathBuf,
    /// The latest complete checkpoint of an earlier attempt, materialised, when there is one.
    pub resume_from: Option<ResumeFrom>,
    /// The attempt's working directory (also the process's current directory).
    pub work_dir: PathBuf,
    pub rank: u32,
    pub world_size: u32,
    /// `host:port` for multi-process stages to rendezvous; none for single-process stages.
    pub rendezvous: Option<String>,
    /// For plugins that asked for it (`wants_run_context`): a JSON file ([`RunContext`]) the
    /// engine wrote with what the state knows about the run and this stage's upstream stages,
    /// since plugins never read the database themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_context: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputArtifact {
    /// Content digest of the artifact (`sha256:...` of its manifest), or of the external file.
    pub digest: String,
    /// Local path: a folder for stage outputs, the file itself for single-file inputs.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeFrom {
    pub digest: String,
    pub step: u64,
    pub path: PathBuf,
}

/// One line of a worker's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress {
        done: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    Metric {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
        name: String,
        value: f64,
    },
    /// A complete checkpoint folder. The engine stores it as an artifact before the worker
    /// reports the next one; the worker must not change it afterwards.
    Checkpoint { step: u64, path: PathBuf },
    /// A finished output (file or folder), absolute or relative to `work_dir`.
    Output { name: String, path: PathBuf },
    Log {
        #[serde(default = "info")]
        level: String,
        message: String,
    },
    /// Facts about where the work ran that belong in lineage: library and driver versions
    /// (`libtorch`, `cuda`, `nccl`), `world_size`, GPU model… Later reports add to earlier ones.
    Environment {
        facts: std::collections::BTreeMap<String, serde_json::Value>,
    },
}

fn info() -> String {
    "info".into()
}

impl Event {
    /// Parses a stdout line; `None` for lines that are not events (they are log text).
    pub fn parse_line(line: &str) -> Option<Event> {
        let line = line.trim();
        if !line.starts_with('{') || !line.contains("\"event\"") {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

/// A parameter the plugin rejects; `field` is the path inside `params` (e.g. `run` or `lr.max`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

impl ParamError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "params.{}: {}", self.field, self.message)
    }
}

/// What `PATH describe` prints on success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescribeReply {
    /// Changes whenever results may change; part of the stage fingerprint. When absent the
    /// engine uses the executable's content hash.
    #[serde(default)]
    pub version: Option<String>,
    pub outputs: Vec<String>,
    /// Asks the engine for a `run_context.json` ([`RunContext`]) in each invocation. Not part
    /// of the fingerprint; absent (false) for every plugin that does not ask.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wants_run_context: bool,
    /// What the stage will cost (`leo plan`), computed from the params alone; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

/// Returned by a built-in plugin whose work ended with an exit code the worker should pass on
/// (the shell plugin's command exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exited with code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// A plugin compiled into `leo`.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Part of every stage fingerprint: bump it when results change.
    fn version(&self) -> String;
    /// Checks `params` and returns the output names the stage will produce.
    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError>;
    /// What the stage will cost, from params `describe` accepted (`leo plan` totals it). Must
    /// not read inputs or the network: plan runs before anything is fetched.
    fn estimate(&self, _params: &Value) -> Option<Estimate> {
        None
    }
    /// Whether each invocation should carry a [`RunContext`] (see [`DescribeReply`]).
    fn wants_run_context(&self) -> bool {
        false
    }
    /// Runs one attempt. Errors make the attempt fail (exit code 1).
    fn run(&self, invocation: &Invocation, events: &Emitter) -> anyhow::Result<()>;
}

/// Writes events to stdout, one flushed JSON line each.
#[derive(Debug, Default)]
pub struct Emitter {
    _private: (),
}

impl Emitter {
    pub fn new() -> Self {
        Emitter { _private: () }
    }

    pub fn emit(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.flush()
    }

    pub fn progress(&self, done: u64, total: Option<u64>, unit: &str) -> std::io::Result<()> {
        self.emit(&Event::Progress {
            done,
            total,
            unit: Some(unit.to_string()),
        })
    }

    pub fn output(&self, name: &str, path: impl Into<PathBuf>) -> std::io::Result<()> {
        self.emit(&Event::Output {
            name: name.to_string(),
            path: path.into(),
        })
    }

    pub fn checkpoint(&self, step: u64, path: impl Into<PathBuf>) -> std::io::Result<()> {
        self.emit(&Event::Checkpoint {
            step,
            path: path.into(),
        })
    }

    pub fn metric(&self, step: Option<u64>, name: &str, value: f64) -> std::io::Result<()> {
        self.emit(&Event::Metric {
            step,
            name: name.to_string(),
            value,
        })
    }
}

/// Makes a worker die with the engine that started it (`PR_SET_PDEATHSIG`), so no attempt runs
/// on unsupervised; a no-op when not started by an engine (no `LEO_ENGINE_PID`).
pub fn tie_to_engine() {
    let Some(engine) = std::env::var(ENGINE_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The engine may have died before the line above took effect.
        if libc::getppid() != engine {
            std::process::exit(137);
        }
    }
}

/// Fails naming the first key of `params` that is not in `known`, so a misspelt setting is an
/// error rather than silently ignored (every plugin's params check starts here).
pub fn reject_unknown_params(
    params: &serde_json::Map<String, Value>,
    plugin: &str,
    known: &[&str],
) -> Result<(), ParamError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ParamError::new(
            key.clone(),
            format!(
                "unknown parameter `{key}` of the {plugin} plugin (known: {})",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Reads a string field of a params object, with the error a user can act on.
pub fn param_str<'a>(params: &'a Value, field: &str) -> Result<Option<&'a str>, ParamError> {
    match params.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ParamError::new(
            field,
            format!("must be a string, found {}", kind(other)),
        )),
    }
}

/// Name of a JSON value's type, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::Checkpoint {
            step: 5,
            path: "ckpt/step-5".into(),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"event":"checkpoint","step":5,"path":"ckpt/step-5"}"#
        );
        assert_eq!(Event::parse_line(&line), Some(e));
        assert_eq!(
            Event::parse_line(r#"{"event":"progress","done":3,"total":10}"#),
            Some(Event::Progress {
                done: 3,
                total: Some(10),
                unit: None
            })
        );
    }

    #[test]
    fn plain_lines_are_not_events() {
        assert_eq!(Event::parse_line("hello"), None);
        assert_eq!(Event::parse_line(r#"{"event":"unknown"}"#), None);
        assert_eq!(Event::parse_line(r#"{"x":1}"#), None);
    }

    #[test]
    fn param_str_names_the_type() {
        let p = serde_json::json!({"run": 3});
        assert_eq!(
            param_str(&p, "run").unwrap_err().message,
            "must be a string, found an integer"
        );
        assert_eq!(param_str(&p, "nope").unwrap(), None);
    }
}
