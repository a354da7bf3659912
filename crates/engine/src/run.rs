//! Starting and resuming runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_state::{RunRecord, RunStatus, State};
use leo_store::ArtifactStore;
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::check::{check_stored, Checked};
use crate::observer::Observer;
use crate::resources::Machine;
use crate::scheduler;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub machine: Machine,
    /// Time a worker gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// First retry delay; doubles per attempt (capped at a minute), with ±50 % jitter.
    pub retry_base: Duration,
    pub heartbeat: Duration,
    /// How long a stage's lease outlives the engine's last heartbeat: another engine sharing the
    /// state takes the work over after that. Must exceed `heartbeat`.
    pub lease_ttl: Duration,
    /// Attempt working folders go under `work_root/RUN/STAGE/attempt-N`.
    pub work_root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
}

/// A run id that sorts by time: `YYYYMMDD-HHMMSS-xxxxxx`.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() as u64;
    let mix = (nanos ^ (u64::from(std::process::id()) << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{}-{:06x}",
        now.format("%Y%m%d-%H%M%S"),
        (mix >> 40) & 0xff_ffff
    )
}

/// Records a new run of a checked workflow and executes it.
pub async fn start_run(
    checked: Checked,
    workflow_path: &str,
    state: &State,
    store: &ArtifactStore,
    opts: &EngineOptions,
    observer: Arc<dyn Observer>,
    cancel: watch::Receiver<bool>,
) -> Result<RunOutcome> {
    let run_id = new_run_id();
    let now = leo_state::now_ms();
    state
        .create_run(&RunRecord {
            id: run_id.clone(),
            workflow_name: checked.workflow.name.clone(),
            workflow_path: workflow_path.to_string(),
            spec_json: serde_json::to_string(&checked.workflow)
                .context("serialising the workflow")?,
            store_url: store.url().to_string(),
            status: RunStatus::Running,
            created_at: now,
            updated_at: now,
            engine_host: Some(crate::hostname()),
            engine_pid: Some(i64::from(std::process::id())),
            engine_heartbeat: Some(now),
            provenance: Some(crate::provenance::capture(workflow_path).to_string()),
        })
        .await?;
    let names: Vec<&str> = checked.workflow.stages.keys().map(String::as_str).collect();
    state.add_pending_stages(&run_id, &names).await?;
    scheduler::execute(&run_id, checked, state, store, opts, observer, cancel).await
}

/// Finishes a failed, cancelled or killed run: done stages are kept, the rest run again, and a
/// stage with checkpoints continues from its latest.
pub async fn resume_run(
    run_id: &str,
    state: &State,
    catalog: &Catalog,
    opts: &EngineOptions,
    observer: Arc<dyn Observer>,
    cancel: watch::Receiver<bool>,
) -> Result<RunOutcome> {
    let run = state
        .get_run(run_id)
        .await?
        .with_context(|| format!("no run `{run_id}` in {} (see `leo list`)", state.location()))?;
    if run.status == RunStatus::Succeeded {
        return Ok(RunOutcome {
            run_id: run.id,
            status: RunStatus::Succeeded,
        });
    }
    if run.status == RunStatus::Running {
        ensure_engine_gone(&run, opts.heartbeat)?;
    }
    if !state
        .claim_run(
            run_id,
            &crate::hostname(),
            i64::from(std::process::id()),
            &run,
        )
        .await?
    {
        bail!("run {run_id} was just claimed by another leo process; see `leo status {run_id}`");
    }
    // Attempts the dead engine left running: whatever of them still lives on this host goes.
    let here = crate::hostname();
    // Their Slurm jobs go too, wherever they run: the stage is resubmitted from its checkpoint.
    let mut jobs = Vec::new();
    for a in state.attempts(run_id).await? {
        if a.status == leo_state::AttemptStatus::Running {
            if let Some(id) = a.job_id.as_deref().and_then(|j| j.strip_prefix("slurm:")) {
                jobs.push(id.to_string());
            }
        }
        if a.status == leo_state::AttemptStatus::Running && a.host == here {
            if let Some(pid) = a.pid.and_then(|p| i32::try_from(p).ok()) {
                kill_stale_group(pid, run_id);
            }
        }
    }
    if let Err(e) = leo_slurm::cancel_now(&jobs) {
        tracing::warn!(
            "run {run_id}: cancelling the Slurm jobs its engine left ({}) failed: {e:#}; cancel them with scancel",
            jobs.join(", ")
        );
    }
    state.mark_lost(run_id).await?;
    let workflow: leo_spec::Workflow = serde_json::from_str(&run.spec_json).with_context(|| {
        format!("run {run_id}: the stored workflow cannot be read by this leo version")
    })?;
    let checked = check_stored(&workflow, catalog, &format!("run {run_id}"))
        .map_err(|e| anyhow::anyhow!("run {run_id} can no longer be checked: {e}"))?;
    let store = ArtifactStore::open(&run.store_url)?;
    scheduler::execute(run_id, checked, state, &store, opts, observer, cancel).await
}

/// Refuses to resume a run whose engine is still alive.
fn ensure_engine_gone(run: &RunRecord, heartbeat: Duration) -> Result<()> {
    let (Some(host), Some(pid)) = (&run.engine_host, run.engine_pid) else {
        return Ok(());
    };
    if *host == crate::hostname() {
        if pid != i64::from(std::process::id()) && process_is_leo(pid) {
            bail!("run {} is still being executed by leo (pid {pid}); stop it first (Ctrl-C or kill {pid})", run.id);
        }
        return Ok(());
    }
    let age = leo_state::now_ms() - run.engine_heartbeat.unwrap_or(0);
    let stale_after = (heartbeat * 5).as_millis() as i64;
    if age < stale_after {
        bail!(
            "run {} is being executed on {host} (last heartbeat {:.0}s ago); wait until it stops or its heartbeat is older than {}s",
            run.id,
            age as f64 / 1000.0,
            stale_after / 1000
        );
    }
    Ok(())
}

/// SIGKILLs the process group `pgid` if a member of it still belongs to `run_id` (its
/// environment says so), so a recycled pid never hits an unrelated process.
fn kill_stale_group(pgid: i32, run_id: &str) {
    let marker = format!("LEO_RUN_ID={run_id}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let ours = procs.flatten().any(|entry| {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            return false;
        };
        let in_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name (which may contain spaces) close with ')'.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split_whitespace().nth(2)?.parse::<i32>().ok()
            })
            == Some(pgid);
        in_group
            && std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false)
    });
    if ours {
        tracing::warn!("run {run_id}: killing leftover process group {pgid} of a lost attempt");
        // SAFETY: the group was verified to belong to this run's attempt.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Whether the engine recorded as running `run` is gone (so the run needs `leo resume`).
/// Only answerable on the engine's host; elsewhere a heartbeat older than `stale` counts.
pub fn engine_is_gone(run: &RunRecord, stale: Duration) -> bool {
    if run.status != RunStatus::Running {
        return false;
    }
    match (&run.engine_host, run.engine_pid) {
        (Some(host), Some(pid)) if *host == crate::hostname() => !process_is_leo(pid),
        _ => leo_state::now_ms() - run.engine_heartbeat.unwrap_or(0) > stale.as_millis() as i64,
    }
}

fn process_is_leo(pid: i64) -> bool {
    let Ok(pid32) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid32, 0) } == 0;
    alive
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("leo"))
            .unwrap_or(false)
}
