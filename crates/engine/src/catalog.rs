//! Finding a stage's plugin and asking it about its params, before anything runs.

use std::ffi::{OsStr, OsString};
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
    /// The plugin asked for a run context in its invocations (`run_context.json`). Not part of
    /// the fingerprint, so asking for it changes no stage's cache key.
    pub wants_run_context: bool,
    /// What the stage will cost, as the plugin estimated it from the params (`leo plan`).
    pub estimate: Option<leo_plugin::Estimate>,
}

/// Plugins served by companion executables beside `leo`: (plugin name, executable). They need
/// libraries the `leo` binary must never link (libtorch), so they live in programs of their own
/// that speak the exec protocol as `EXE describe NAME` and `EXE worker NAME INVOCATION`.
pub const COMPANION_PLUGINS: &[(&str, &str)] = &[
    ("pretrain", "leo-torch"),
    ("sft", "leo-torch"),
    ("eval", "leo-torch"),
    ("mtbench", "leo-torch"),
];

/// How to build a companion executable, for the error when it is missing.
fn build_hint(exe: &str) -> String {
    match exe {
        "leo-torch" => {
            "build it with `cargo build -p leo-torch` (needs libtorch: tools/torch-env.sh)".into()
        }
        other => format!("build it with `cargo build -p {other}`"),
    }
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

    /// The command that runs `plugin` on another machine (a container image, a cluster node),
    /// by program names instead of this machine's paths: what [`Catalog::describe`] would run,
    /// with `leo` for built-ins (`leo worker NAME`), the companion's name for its plugins
    /// (`leo-torch worker NAME`) and an `exec:` path as given (`PATH run`). The invocation
    /// file's path is appended, as to [`PluginInfo::command`].
    pub fn portable_command(&self, plugin: &PluginRef) -> Vec<String> {
        match plugin {
            PluginRef::Builtin(name) => {
                let companion = COMPANION_PLUGINS
                    .iter()
                    .find(|(n, _)| n == name)
                    .filter(|_| self.builtin(name).is_none());
                let program = companion.map_or("leo", |(_, exe)| exe);
                vec![program.to_string(), "worker".into(), name.clone()]
            }
            PluginRef::Exec(path) => vec![path.clone(), "run".into()],
        }
    }

    pub fn describe(
        &self,
        plugin: &PluginRef,
        params: &Value,
    ) -> Result<PluginInfo, DescribeError> {
        match plugin {
            PluginRef::Builtin(name) => {
                if self.builtin(name).is_none() {
                    if let Some((_, exe)) = COMPANION_PLUGINS.iter().find(|(n, _)| n == name) {
                        return describe_companion(
                            name,
                            exe,
                            &self.leo_exe,
                            std::env::var_os("PATH").as_deref(),
                            params,
                        );
                    }
                }
                let p = self.builtin(name).ok_or_else(|| {
                    DescribeError::Unknown(format!(
                        "unknown plugin `{name}`; built-ins are: {}; with leo-torch: {} (or use exec:PATH for an external plugin)",
                        self.builtin_names().join(", "),
                        COMPANION_PLUGINS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let outputs = p.describe(params).map_err(DescribeError::Param)?;
                Ok(PluginInfo {
                    name: name.clone(),
                    version: p.version(),
                    outputs,
                    command: vec![self.leo_exe.clone().into(), "worker".into(), name.into()],
                    builtin: true,
                    wants_run_context: p.wants_run_context(),
                    estimate: p.estimate(params),
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
    let reply = run_describe(&exe, &[], params)?;
    let version = version_or_hash(reply.version, &exe)?;
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
        wants_run_context: reply.wants_run_context,
        estimate: reply.estimate,
    })
}

/// A plugin of a companion executable (`leo-torch`): found beside `leo`, then on `path_var`;
/// described as `EXE describe NAME`, run as `EXE worker NAME INVOCATION`. Its fingerprint
/// names it like a built-in (`NAME`), since the companion ships with leo.
fn describe_companion(
    name: &str,
    exe_name: &str,
    leo_exe: &Path,
    path_var: Option<&OsStr>,
    params: &Value,
) -> Result<PluginInfo, DescribeError> {
    let exe = find_companion(exe_name, leo_exe, path_var).ok_or_else(|| {
        DescribeError::Unknown(format!(
            "plugin `{name}` is provided by `{exe_name}`, which is not beside {} nor on PATH; {}",
            leo_exe.display(),
            build_hint(exe_name)
        ))
    })?;
    let reply = run_describe(&exe, &[name], params)?;
    let version = version_or_hash(reply.version, &exe)?;
    Ok(PluginInfo {
        name: name.to_string(),
        version,
        outputs: reply.outputs,
        command: vec![exe.into_os_string(), "worker".into(), name.into()],
        // Like `leo worker`, the companion ties its life to the engine itself (LEO_ENGINE_PID).
        builtin: true,
        wants_run_context: reply.wants_run_context,
        estimate: reply.estimate,
    })
}

/// The companion executable `exe_name`: in the folder of the `leo` executable, else the first
/// on `path_var` (a PATH value).
fn find_companion(exe_name: &str, leo_exe: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let beside = leo_exe.parent().map(|d| d.join(exe_name));
    beside.filter(|p| is_executable(p)).or_else(|| {
        path_var.and_then(|paths| {
            std::env::split_paths(paths)
                .map(|d| d.join(exe_name))
                .find(|p| is_executable(p))
        })
    })
}

/// Runs `EXE describe ARGS…` with the params on stdin: a [`DescribeReply`] (exit 0) or a
/// [`ParamError`] line (exit 1).
fn run_describe(exe: &Path, args: &[&str], params: &Value) -> Result<DescribeReply, DescribeError> {
    let what = std::iter::once(exe.display().to_string())
        .chain(std::iter::once("describe".to_string()))
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(exe)
        .arg("describe")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DescribeError::Other(format!("starting `{what}`: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its params closes the pipe: not an error here.
        let _ = stdin.write_all(params.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DescribeError::Other(format!("running `{what}`: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let err_text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines().chain(err_text.lines()) {
            if let Ok(e) = serde_json::from_str::<ParamError>(line.trim()) {
                return Err(DescribeError::Param(e));
            }
        }
        return Err(DescribeError::Other(format!(
            "`{what}` failed ({}): {}",
            out.status,
            err_text.lines().last().unwrap_or("").trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| DescribeError::Other(format!("`{what}` printed no valid reply: {e}")))
}

/// The version a plugin declared, else its executable's SHA-256.
fn version_or_hash(version: Option<String>, exe: &Path) -> Result<String, DescribeError> {
    match version {
        Some(v) => Ok(v),
        None => file_sha256(exe)
            .map_err(|e| DescribeError::Other(format!("hashing {}: {e}", exe.display()))),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn resolve_executable(path: &str) -> Option<PathBuf> {
    if path.contains('/') {
        let p = PathBuf::from(path);
        return is_executable(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(path))
            .find(|p| is_executable(p))
    })
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fake `leo-torch`: `describe NAME` prints a reply naming NAME's outputs, or rejects
    /// params holding `"bad"`.
    fn fake_leo_torch(dir: &Path, version: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("leo-torch");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 [ \"$1\" = describe ] || exit 2\n\
                 params=$(cat)\n\
                 case \"$params\" in *bad*) echo '{{\"field\": \"lr\", \"message\": \"must be positive\"}}'; exit 1;; esac\n\
                 echo '{{\"version\": \"{version}\", \"outputs\": [\"'\"$2\"'-model\"]}}'\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn describe(
        leo_exe: &Path,
        path_var: &Path,
        params: Value,
    ) -> Result<PluginInfo, DescribeError> {
        describe_companion(
            "pretrain",
            "leo-torch",
            leo_exe,
            Some(path_var.as_os_str()),
            &params,
        )
    }

    #[test]
    fn companion_plugins_are_found_beside_leo_then_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let leo = tmp.path().join("bin/leo");
        let on_path = tmp.path().join("elsewhere");
        let path_var = std::env::join_paths([tmp.path().join("empty"), on_path.clone()]).unwrap();
        let path_var = PathBuf::from(path_var);

        // Only on PATH.
        let from_path = fake_leo_torch(&on_path, "torch-path");
        let info = describe(&leo, &path_var, serde_json::json!({})).unwrap();
        assert_eq!(info.version, "torch-path");
        assert_eq!(info.command[0], from_path.as_os_str());

        // Beside leo wins over PATH.
        let beside = fake_leo_torch(&tmp.path().join("bin"), "torch-beside");
        let info = describe(&leo, &path_var, serde_json::json!({"lr": 1})).unwrap();
        assert_eq!(
            info,
            PluginInfo {
                name: "pretrain".into(),
                version: "torch-beside".into(),
                outputs: vec!["pretrain-model".into()],
                command: vec![beside.into_os_string(), "worker".into(), "pretrain".into()],
                builtin: true,
                wants_run_context: false,
                estimate: None,
            }
        );

        // Its param errors are the user's, as for exec plugins.
        match describe(&leo, &path_var, serde_json::json!({"lr": "bad"})) {
            Err(DescribeError::Param(e)) => {
                assert_eq!(e, ParamError::new("lr", "must be positive"))
            }
            other => panic!("expected a param error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_companion_says_where_it_was_looked_for_and_how_to_build_it() {
        let tmp = tempfile::tempdir().unwrap();
        let leo = tmp.path().join("bin/leo");
        match describe(&leo, &tmp.path().join("empty"), serde_json::json!({})) {
            Err(DescribeError::Unknown(m)) => assert_eq!(
                m,
                format!(
                    "plugin `pretrain` is provided by `leo-torch`, which is not beside {} nor on \
                     PATH; build it with `cargo build -p leo-torch` (needs libtorch: \
                     tools/torch-env.sh)",
                    leo.display()
                )
            ),
            other => panic!("expected a not-found error, got {other:?}"),
        }
    }

    #[test]
    fn portable_commands_name_programs_not_paths() {
        let catalog = Catalog::new(Vec::new(), PathBuf::from("/opt/leo/bin/leo"));
        let cmd = |p: PluginRef| catalog.portable_command(&p);
        assert_eq!(
            cmd(PluginRef::Builtin("pretrain".into())),
            ["leo-torch", "worker", "pretrain"]
        );
        assert_eq!(
            cmd(PluginRef::Builtin("report".into())),
            ["leo", "worker", "report"]
        );
        assert_eq!(
            cmd(PluginRef::Exec("plugins/x.py".into())),
            ["plugins/x.py", "run"]
        );
    }

    #[test]
    fn unknown_plugins_list_the_companion_plugins_too() {
        let catalog = Catalog::new(Vec::new(), PathBuf::from("/nonexistent/leo"));
        match catalog.describe(
            &PluginRef::Builtin("pretrian".into()),
            &serde_json::json!({}),
        ) {
            Err(DescribeError::Unknown(m)) => {
                assert!(
                    m.contains("with leo-torch: pretrain, sft, eval, mtbench"),
                    "{m}"
                )
            }
            other => panic!("expected an unknown-plugin error, got {other:?}"),
        }
    }
}
