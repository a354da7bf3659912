//! Where a run's code came from, recorded with the run for lineage: leo's version, the git
//! commit of the repository holding the workflow and whether its work tree had uncommitted
//! changes, and the host. Remote URLs are not recorded (they may carry credentials).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

pub(crate) fn capture(workflow_path: &str) -> Value {
    let dir = Path::new(workflow_path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let repository = git(&["rev-parse", "HEAD"]).map(|commit| {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        json!({ "commit": commit, "dirty": dirty })
    });
    json!({
        "leo_version": env!("CARGO_PKG_VERSION"),
        "git": repository,
        "host": crate::hostname(),
    })
}
