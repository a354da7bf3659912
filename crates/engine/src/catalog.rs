//! Finding a stage's plugin and asking it about its params, before anything runs.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use leo_plugin::{DescribeReply, ParamError, Plugin};
use leo_spec::PluginRef;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the engine knows about a stage's plugin once it accepted the params.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub outputs: Vec<String>,
    /// Program and leading arguments; the invocation file's path is appended.
    pub command: Vec<OsString>,
    /// Runs as `leo worker` (which ties its life to the engine itself).
    pub builtin: bool,
}

#[derive(Debug)]
pub enum DescribeError {
    Unknown(String),
    Param(ParamError),
    Other(String),
}

/// The built-in plugins (compiled into `leo`) plus external executables.
#[derive(Clone)]
pub struct Catalog {
    builtins: Vec<Arc<dyn Plugin>>,
    /// The `leo` executable that runs built-ins as `leo worker NAME`.
    leo_exe: PathBuf,
}

impl Catalog {
    pub fn new(builtins: Vec<Arc<dyn Plugin>>, leo_exe: PathBuf) -> Catalog {
        Catalog { builtins, leo_exe }
    }

    pub fn builtin(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.builtins.iter().find(|p| p.name() == name)
    }

    pub fn builtin_names(&self) -> Vec<&'static str> {
        self.builtins.iter().map(|p| p.name()).collect()
    }

    pub fn describe(
        &self,
        plugin: &PluginRef,
        params: &Value,
    ) -> Result<PluginInfo, DescribeError> {
        match plugin {
            PluginRef::Builtin(name) => {
                let p = self.builtin(name).ok_or_else(|| {
                    DescribeError::Unknown(format!(
                        "unknown plugin `{name}`; built-ins are: {} (or use exec:PATH for an external plugin)",
                        self.builtin_names().join(", ")
                    ))
                })?;
                let outputs = p.describe(params).map_err(DescribeError::Param)?;
                Ok(PluginInfo {
                    name: name.clone(),
                    version: p.version(),
                    outputs,
                    command: vec![self.leo_exe.clone().into(), "worker".into(), name.into()],
                    builtin: true,
                })
            }
            PluginRef::Exec(path) => describe_exec(path, params),
        }
    }
}

fn describe_exec(path: &str, params: &Value) -> Result<PluginInfo, DescribeError> {
    let exe = resolve_executable(path).ok_or_else(|| {
        DescribeError::Unknown(format!(
            "external plugin `{path}` not found or not executable"
        ))
    })?;
    let mut child = Command::new(&exe)
        .arg("describe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DescribeError::Other(format!("starting `{} describe`: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its params closes the pipe: not an error here.
        let _ = stdin.write_all(params.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DescribeError::Other(format!("running `{} describe`: {e}", exe.display())))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let err_text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines().chain(err_text.lines()) {
            if let Ok(e) = serde_json::from_str::<ParamError>(line.trim()) {
                return Err(DescribeError::Param(e));
            }
        }
        return Err(DescribeError::Other(format!(
            "`{} describe` failed ({}): {}",
            exe.display(),
            out.status,
            err_text.lines().last().unwrap_or("").trim()
        )));
    }
    let reply: DescribeReply = serde_json::from_slice(&out.stdout).map_err(|e| {
        DescribeError::Other(format!(
            "`{} describe` printed no valid reply: {e}",
            exe.display()
        ))
    })?;
    let version = match reply.version {
        Some(v) => v,
        None => file_sha256(&exe)
            .map_err(|e| DescribeError::Other(format!("hashing {}: {e}", exe.display())))?,
    };
    // The fingerprint names the plugin by file name, not path: a checkout elsewhere (or on
    // another machine) with the same plugin content and version shares its cache.
    let file_name = exe
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
    Ok(PluginInfo {
        name: format!("exec:{file_name}"),
        version,
        outputs: reply.outputs,
        command: vec![exe.into_os_string(), "run".into()],
        builtin: false,
    })
}

fn resolve_executable(path: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if path.contains('/') {
        let p = PathBuf::from(path);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(path))
            .find(|p| is_exec(p))
    })
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}
