//! Submitting, watching and cancelling jobs through Slurm's commands (found on PATH; `SLURM_CONF`
//! and the rest of the environment pass through).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

/// A job as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting, running, or finishing (`COMPLETING`): not over yet.
    Active(String),
    Over(FinalState),
}

/// How a job ended: Slurm's state (`COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `PREEMPTED`,
/// `NODE_FAIL`, `OUT_OF_MEMORY`, …) and the batch script's exit code and signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalState {
    pub state: String,
    pub exit_code: i32,
    pub signal: i32,
}

impl FinalState {
    /// Ended for reasons outside the stage's code: the machine or the scheduler took it away.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL" | "CANCELLED" | "REVOKED" | "DEADLINE"
        )
    }
}

/// `sbatch --parsable --export=ALL SCRIPT`: the job id. `env` is added to the job's
/// environment. The engine's own `SLURM_*` variables (when leo runs inside an allocation) are
/// not passed on: they would describe that allocation, not the new job.
pub async fn submit(script: &Path, env: &BTreeMap<String, String>) -> Result<String> {
    let mut cmd = Command::new("sbatch");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("SLURM_") && key != "SLURM_CONF" {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd
        .args(["--parsable", "--export=ALL"])
        .arg(script)
        .envs(env)
        .kill_on_drop(true)
        .output()
        .await
        .context("running sbatch (is Slurm's client installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `ID`, or `ID;CLUSTER` on a federation, which the other commands
    // would need `-M CLUSTER` for: not supported.
    let text = text.trim();
    if text.contains(';') {
        bail!(
            "sbatch submitted job {text:?} to another cluster; leo follows jobs on the default cluster only (cancel it with scancel -M)"
        );
    }
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {text:?}");
    }
    Ok(text.to_string())
}

/// The job's state: `scontrol show job` while the controller remembers it, else `sacct`.
/// `None` when neither knows the job (yet): accounting may lag a moment behind.
pub async fn job_status(id: &str) -> Result<Option<JobStatus>> {
    // A scontrol that cannot run leaves the question to sacct.
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .kill_on_drop(true)
        .output()
        .await
        .ok();
    if let Some(out) = out.filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        if let Some(state) = field("JobState=") {
            let (exit_code, signal) = field("ExitCode=")
                .as_deref()
                .and_then(parse_exit)
                .unwrap_or((0, 0));
            return Ok(Some(classify(state, exit_code, signal)));
        }
    }
    let out = Command::new("sacct")
        .args(["-j", id, "-X", "-n", "-P", "-o", "State,ExitCode"])
        .kill_on_drop(true)
        .output()
        .await
        .context("running sacct")?;
    if !out.status.success() {
        bail!(
            "neither scontrol nor sacct knows job {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    let (state, exit) = line.split_once('|').unwrap_or((line, "0:0"));
    // sacct writes `CANCELLED by 0`.
    let state = state.split_whitespace().next().unwrap_or("").to_string();
    let (exit_code, signal) = parse_exit(exit.trim()).unwrap_or((0, 0));
    Ok(Some(classify(state, exit_code, signal)))
}

fn classify(state: String, exit_code: i32, signal: i32) -> JobStatus {
    match state.as_str() {
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SPECIAL_EXIT" | "UPDATE_DB" | "POWER_UP_NODE" => {
            JobStatus::Active(state)
        }
        _ => JobStatus::Over(FinalState {
            state,
            exit_code,
            signal,
        }),
    }
}

/// `CODE:SIGNAL`.
fn parse_exit(text: &str) -> Option<(i32, i32)> {
    let (code, signal) = text.split_once(':')?;
    Some((code.parse().ok()?, signal.parse().ok()?))
}

/// `scancel ID`: Slurm signals every process of the job (SIGTERM, then SIGKILL after its
/// `KillWait`).
pub async fn cancel(id: &str) -> Result<()> {
    let out = Command::new("scancel")
        .arg(id)
        .kill_on_drop(true)
        .output()
        .await
        .context("running scancel")?;
    if !out.status.success() {
        bail!(
            "scancel {id} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// [`cancel`] for a process on its way out (no runtime needed); an error says why it failed.
pub fn cancel_now(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let status = std::process::Command::new("scancel")
        .args(ids)
        .status()
        .context("running scancel")?;
    if !status.success() {
        bail!("scancel {} failed ({status})", ids.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_active_or_over_and_over_ones_say_whose_fault() {
        assert_eq!(
            classify("RUNNING".into(), 0, 0),
            JobStatus::Active("RUNNING".into())
        );
        let JobStatus::Over(f) = classify("PREEMPTED".into(), 0, 15) else {
            panic!()
        };
        assert!(f.is_infrastructure());
        let JobStatus::Over(f) = classify("FAILED".into(), 1, 0) else {
            panic!()
        };
        assert!(!f.is_infrastructure());
        assert_eq!(parse_exit("137:9"), Some((137, 9)));
    }
}
