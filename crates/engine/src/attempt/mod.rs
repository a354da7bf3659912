//! One attempt of one stage: child processes speaking the worker protocol, one per rank
//! (`world_size` of them; usually one).
//!
//! The attempt gets its own working folder and process group. Its stdout and stderr go to a
//! log file that is stored as an artifact when it ends; rank 0's stdout lines that are events
//! are recorded and forwarded. Timeouts, cancellation and a failed rank send SIGTERM to the
//! group, then SIGKILL after the grace period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_plugin::{Event, InputArtifact, Invocation, ResumeFrom, PROTOCOL_VERSION};
use leo_state::{
    AttemptFinish, AttemptStatus, Lease, NewAttempt, OutputArtifact, StageCompletion, StageStatus,
    State,
};
use leo_store::ArtifactStore;
use tokio::sync::watch;

use crate::check::Checked;
use crate::observer::{EngineEvent, Observer};
use crate::scheduler::ResolvedInput;

mod process;
mod slurm;
mod supervise;

pub use process::kill_all_attempts;
pub use slurm::{job_script, JobPlan};
use supervise::{supervise, Supervised};

/// Lines of stderr kept to explain a failure.
const ERROR_TAIL_LINES: usize = 8;

pub(crate) struct AttemptSpec {
    pub run_id: String,
    pub stage: String,
    pub number: u32,
    /// The stage's fingerprint hash and canonical JSON (recorded when the attempt starts).
    pub fingerprint: (String, String),
    pub checked: Arc<Checked>,
    pub inputs: Vec<ResolvedInput>,
    /// Latest checkpoint of this stage in this run: (digest, step).
    pub resume_from: Option<(String, u64)>,
    pub gpus: Vec<String>,
    pub state: State,
    pub store: ArtifactStore,
    pub observer: Arc<dyn Observer>,
    pub work_dir: PathBuf,
    /// Per-run folder of shared, read-only materialised inputs.
    pub shared_dir: PathBuf,
    pub grace: Duration,
    pub cancel: watch::Receiver<bool>,
    /// The lease this attempt runs under; its outputs are recorded only while it is current.
    pub lease: Option<Lease>,
}

#[derive(Debug)]
pub(crate) enum AttemptOutcome {
    Succeeded {
        outputs: Vec<OutputArtifact>,
    },
    Failed {
        error: String,
    },
    /// The machine or the scheduler ended it (preemption, node failure…), not the stage: it is
    /// resubmitted, up to `resubmits` times, without counting against the stage's retries.
    Interrupted {
        error: String,
        resubmits: u32,
        /// It stored a checkpoint: the stage moved on, so this one does not count.
        progressed: bool,
    },
    Cancelled,
}

pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
    /// Infrastructure ended the attempt (a cluster job preempted, its node failed, …): why.
    Interrupted(String),
    /// The attempt failed in a way its exit code does not tell (a job out of memory): why.
    JobFailed(String),
}

impl Exit {
    fn of(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::Code(-1),
        }
    }

    fn is_success(&self) -> bool {
        matches!(self, Exit::Code(0))
    }
}

/// Runs a callback once: when [`OnExit::fire`] is called or, at the latest, when dropped.
pub(crate) struct OnExit(Option<Box<dyn FnOnce() + Send>>);

impl OnExit {
    pub fn new(f: impl FnOnce() + Send + 'static) -> OnExit {
        OnExit(Some(Box::new(f)))
    }

    pub fn fire(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl Drop for OnExit {
    fn drop(&mut self) {
        self.fire();
    }
}

/// Runs one attempt; `process_gone` fires as soon as the worker process has exited.
pub(crate) async fn run(spec: AttemptSpec, mut process_gone: OnExit) -> Result<AttemptOutcome> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let plugin = &spec.checked.plugins[&spec.stage];
    let work = &spec.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("clearing {}", work.display()))?;
    }
    // Outputs go beside invocation.json and log.txt (output names have no dots, so they cannot
    // clash). The checkpoint folder is created by the plugin when it first writes one.
    let output_dir = work.clone();
    let checkpoint_dir = work.join("checkpoints");
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;

    // Inputs: stage outputs are materialised once per run (hard links into a local store) and
    // shared read-only; external files are used in place.
    let mut inputs = BTreeMap::new();
    for input in &spec.inputs {
        let path = match &input.external {
            Some((_, path)) => path.clone(),
            None => spec
                .store
                .materialise_shared(&input.digest, &spec.shared_dir)
                .await
                .with_context(|| {
                    format!(
                        "stage {}: materialising input `{}` ({})",
                        spec.stage, input.name, input.digest
                    )
                })?,
        };
        inputs.insert(
            input.name.clone(),
            InputArtifact {
                digest: input.digest.clone(),
                path,
            },
        );
    }
    let resume_from = match &spec.resume_from {
        Some((digest, step)) => {
            let path = spec
                .store
                .materialise_shared(digest, &spec.shared_dir)
                .await
                .with_context(|| {
                    format!(
                        "stage {}: materialising checkpoint {digest} (step {step})",
                        spec.stage
                    )
                })?;
            Some(ResumeFrom {
                digest: digest.clone(),
                step: *step,
                path,
            })
        }
        None => None,
    };

    // A multi-process stage: one invocation per rank, all pointing at one rendezvous address.
    // A Slurm job gets rank 0's as a template: each rank makes its own where it runs.
    let world_size = stage_spec.resources.world_size.max(1);
    let on_slurm = stage_spec.executor == leo_spec::Executor::Slurm;
    let rendezvous = if world_size > 1 && !on_slurm {
        Some(process::free_rendezvous()?)
    } else {
        None
    };
    let run_context = if plugin.wants_run_context {
        Some(write_run_context(&spec, work).await?)
    } else {
        None
    };
    let mut invocations = Vec::new();
    for rank in 0..if on_slurm { 1 } else { world_size } {
        let invocation = Invocation {
            protocol: PROTOCOL_VERSION,
            run_id: spec.run_id.clone(),
            stage: spec.stage.clone(),
            attempt: spec.number,
            plugin: plugin.name.clone(),
            params: stage_spec.params.clone(),
            inputs: inputs.clone(),
            outputs: plugin.outputs.clone(),
            output_dir: output_dir.clone(),
            checkpoint_dir: checkpoint_dir.clone(),
            resume_from: resume_from.clone(),
            work_dir: work.clone(),
            rank,
            world_size,
            rendezvous: rendezvous.clone(),
            run_context: run_context.clone(),
        };
        let path = work.join(invocation_file(rank));
        std::fs::write(&path, serde_json::to_vec_pretty(&invocation)?)
            .with_context(|| format!("writing {}", path.display()))?;
        invocations.push(path);
    }

    let input_edges: Vec<(String, String, Option<String>)> = spec
        .inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.digest.clone(),
                i.external.as_ref().map(|(uri, _)| uri.clone()),
            )
        })
        .collect();
    let host = crate::hostname();
    let started_at = leo_state::now_ms();
    let attempt_id = spec
        .state
        .start_attempt(&NewAttempt {
            run_id: &spec.run_id,
            stage: &spec.stage,
            number: spec.number,
            host: &host,
            inputs: &input_edges,
            resumed_from: spec.resume_from.as_ref().map(|(d, _)| d.as_str()),
            fingerprint: Some((&spec.fingerprint.0, &spec.fingerprint.1)),
        })
        .await?;
    spec.observer.on(EngineEvent::StageStarted {
        stage: spec.stage.clone(),
        attempt: spec.number,
        resumed_from_step: spec.resume_from.as_ref().map(|(_, s)| *s),
    });

    let log_path = work.join("log.txt");
    let (mut resubmits, mut progressed) = (0, false);
    let result = if on_slurm {
        slurm::supervise_slurm(&spec, &attempt_id, &log_path, stage_spec.timeout)
            .await
            .map(|(supervised, limit, moved_on)| {
                (resubmits, progressed) = (limit, moved_on);
                supervised
            })
    } else {
        supervise(
            &spec,
            &attempt_id,
            &invocations,
            rendezvous.as_deref(),
            &log_path,
            stage_spec.timeout,
        )
        .await
    };
    let ended_at = leo_state::now_ms();
    process_gone.fire();
    let log = store_log(&spec.store, &log_path).await;

    // With several ranks, a failure names the rank that failed first.
    let rank_of = |rank: u32| {
        if world_size > 1 {
            format!("rank {rank} ")
        } else {
            String::new()
        }
    };
    let (status, exit_code, error, outcome) = match result {
        Ok(Supervised {
            exit: Exit::Code(0),
            reported,
            ..
        }) => match collect_outputs(&spec, &plugin.outputs, &output_dir, reported).await {
            Ok(outputs) => (
                AttemptStatus::Succeeded,
                Some(0),
                None,
                AttemptOutcome::Succeeded { outputs },
            ),
            Err(e) => {
                let msg = format!("{e:#}");
                (
                    AttemptStatus::Failed,
                    Some(0),
                    Some(msg.clone()),
                    AttemptOutcome::Failed { error: msg },
                )
            }
        },
        Ok(Supervised {
            exit: Exit::Code(code),
            rank,
            ..
        }) => {
            let msg = failure_message(
                &format!("{}exited with code {code}", rank_of(rank)),
                &log_path,
            );
            (
                AttemptStatus::Failed,
                Some(code),
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok(Supervised {
            exit: Exit::Signal(sig),
            rank,
            ..
        }) => {
            let msg = failure_message(
                &format!("{}killed by signal {sig}", rank_of(rank)),
                &log_path,
            );
            (
                AttemptStatus::Failed,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok(Supervised {
            exit: Exit::TimedOut,
            ..
        }) => {
            let msg = format!(
                "timed out after {}",
                format_duration(stage_spec.timeout.unwrap_or_default())
            );
            (
                AttemptStatus::TimedOut,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok(Supervised {
            exit: Exit::Interrupted(why),
            ..
        }) => {
            let msg = failure_message(&why, &log_path);
            (
                AttemptStatus::Failed,
                None,
                Some(msg.clone()),
                AttemptOutcome::Interrupted {
                    error: msg,
                    resubmits,
                    progressed,
                },
            )
        }
        Ok(Supervised {
            exit: Exit::JobFailed(why),
            ..
        }) => {
            let msg = failure_message(&why, &log_path);
            (
                AttemptStatus::Failed,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok(Supervised {
            exit: Exit::Cancelled,
            ..
        }) => (
            AttemptStatus::Cancelled,
            None,
            Some("cancelled".to_string()),
            AttemptOutcome::Cancelled,
        ),
        Err(e) => {
            let msg = format!("{e:#}");
            (
                AttemptStatus::Failed,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
    };
    let log_ref = log.as_ref().ok().map(|(d, s)| (d.as_str(), *s));
    if let Err(e) = &log {
        tracing::warn!("stage {}: storing the log failed: {e:#}", spec.stage);
    }
    // A success commits the attempt and the stage's outputs in one transaction.
    let completion = match &outcome {
        AttemptOutcome::Succeeded { outputs } => Some(StageCompletion {
            run_id: &spec.run_id,
            stage: &spec.stage,
            status: StageStatus::Succeeded,
            attempt_id: Some(&attempt_id),
            cached_from_run: None,
            outputs,
            fingerprint: None,
            lease: spec.lease.as_ref(),
        }),
        _ => None,
    };
    spec.state
        .finish_attempt(&AttemptFinish {
            attempt_id: &attempt_id,
            status,
            exit_code,
            error: error.as_deref(),
            log: log_ref,
            finished_at: ended_at,
            completion: completion.as_ref(),
        })
        .await?;
    if let AttemptOutcome::Succeeded { outputs } = &outcome {
        // Lineage that survives without the database: a record beside each output in the store.
        if let Err(e) =
            record_artifacts(&spec, &attempt_id, &host, started_at, ended_at, outputs).await
        {
            tracing::warn!(
                "stage {}: writing artifact records failed: {e:#}",
                spec.stage
            );
        }
    }
    Ok(outcome)
}

/// Writes the run context of the stage's upstream stages into the work folder, for a plugin
/// that asked for it: plugins never read the state themselves.
async fn write_run_context(spec: &AttemptSpec, work: &Path) -> Result<PathBuf> {
    let upstream = crate::context::upstream(&spec.checked.dag, &spec.stage);
    let context = crate::context::run_context(&spec.state, &spec.run_id, Some(&upstream))
        .await
        .with_context(|| format!("stage {}: building its run context", spec.stage))?;
    let path = work.join(leo_plugin::RUN_CONTEXT_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&context)?)
        .with_context(|| format!("stage {}: writing {}", spec.stage, path.display()))?;
    Ok(path)
}

/// The invocation file of a rank: `invocation.json` for rank 0 (the only one of a
/// single-process stage), `invocation-rank-K.json` for the others.
fn invocation_file(rank: u32) -> String {
    if rank == 0 {
        "invocation.json".to_string()
    } else {
        format!("invocation-rank-{rank}.json")
    }
}

/// Writes a `.leo-artifact.json` record for each output: what made it (workflow, run, stage,
/// attempt, plugin, params, fingerprint, code provenance, host, times) and from which inputs.
async fn record_artifacts(
    spec: &AttemptSpec,
    attempt_id: &str,
    host: &str,
    started_at: i64,
    finished_at: i64,
    outputs: &[OutputArtifact],
) -> Result<()> {
    let fingerprint: serde_json::Value =
        serde_json::from_str(&spec.fingerprint.1).unwrap_or_default();
    let provenance = spec
        .state
        .get_run(&spec.run_id)
        .await?
        .and_then(|r| r.provenance)
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok());
    let environment = spec.state.attempt_environment(attempt_id).await?;
    let inputs: Vec<serde_json::Value> = spec
        .inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name,
                "digest": i.digest,
                "uri": i.external.as_ref().map(|(uri, _)| uri),
            })
        })
        .collect();
    for out in outputs {
        let record = serde_json::json!({
            "leo_artifact": 1,
            "artifact": out.digest,
            "output": out.name,
            "produced_by": {
                "workflow": spec.checked.workflow.name,
                "run": spec.run_id,
                "stage": spec.stage,
                "attempt": spec.number,
                "attempt_id": attempt_id,
                "host": host,
                "started_at": started_at,
                "finished_at": finished_at,
                "fingerprint": spec.fingerprint.0,
                "code": { "plugin": fingerprint["plugin"], "params": fingerprint["params"] },
                "provenance": provenance,
                "environment": environment,
                "resumed_from": spec.resume_from.as_ref().map(|(d, step)| {
                    serde_json::json!({ "checkpoint": d, "step": step })
                }),
            },
            "inputs": inputs,
        });
        spec.store
            .put_record(
                &out.digest,
                attempt_id,
                &serde_json::to_vec_pretty(&record)?,
            )
            .await?;
    }
    Ok(())
}

/// Stores every declared output. A missing `output` event is tolerated when `out/NAME` exists.
async fn collect_outputs(
    spec: &AttemptSpec,
    declared: &[String],
    output_dir: &Path,
    reported: BTreeMap<String, PathBuf>,
) -> Result<Vec<OutputArtifact>> {
    for name in reported.keys() {
        if !declared.contains(name) {
            bail!(
                "stage {}: the plugin reported output `{name}`, which it did not declare",
                spec.stage
            );
        }
    }
    let mut outputs = Vec::new();
    for name in declared {
        let path = match reported.get(name) {
            Some(p) => p.clone(),
            None => {
                let p = output_dir.join(name);
                if !p.exists() {
                    bail!(
                        "stage {}: the plugin finished without producing output `{name}`",
                        spec.stage
                    );
                }
                p
            }
        };
        let (digest, manifest) = spec
            .store
            .put_path_final(&path, &spec.work_dir)
            .await
            .with_context(|| {
                format!(
                    "stage {}: storing output `{name}` from {}",
                    spec.stage,
                    path.display()
                )
            })?;
        outputs.push(OutputArtifact {
            name: name.clone(),
            digest,
            size: manifest.total_size(),
            files: manifest.files.len() as u64,
        });
    }
    Ok(outputs)
}

async fn store_log(store: &ArtifactStore, log_path: &Path) -> Result<(String, u64)> {
    let owned = log_path.parent().unwrap_or(log_path);
    let (digest, manifest) = store.put_path_final(log_path, owned).await?;
    Ok((digest, manifest.total_size()))
}

/// The reason plus the last lines of the log, so `leo status` explains a failure.
fn failure_message(reason: &str, log_path: &Path) -> String {
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| Event::parse_line(l).is_none() && !l.trim().is_empty())
        .collect();
    let start = tail.len().saturating_sub(ERROR_TAIL_LINES);
    if tail.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {}", tail[start..].join(" | "))
    }
}

/// A duration for people: `4.2s`, `3m07s`, `2h05m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
