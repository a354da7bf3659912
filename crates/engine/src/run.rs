//! Starting and resuming runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_state::{RunRecord, RunStatus, StageStatus, StageUpdate, State};
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
        })
        .await?;
    for name in checked.workflow.stages.keys() {
        state
            .upsert_stage(&StageUpdate {
                run_id: &run_id,
                stage: name,
                status: StageStatus::Pending,
                fingerprint: None,
                fingerprint_json: None,
                cached_from_run: None,
                error: None,
            })
            .await?;
    }
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
    state.mark_lost(run_id).await?;
    let workflow: leo_spec::Workflow = serde_json::from_str(&run.spec_json).with_context(|| {
        format!("run {run_id}: the stored workflow cannot be read by this leo version")
    })?;
    let checked = check_stored(&workflow, catalog, &format!("run {run_id}"))
        .map_err(|e| anyhow::anyhow!("run {run_id} can no longer be checked: {e}"))?;
    let store = ArtifactStore::open(&run.store_url)?;
    state
        .claim_run(run_id, &crate::hostname(), i64::from(std::process::id()))
        .await?;
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
