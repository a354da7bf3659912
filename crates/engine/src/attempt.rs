//! One attempt of one stage: a child process speaking the worker protocol.
//!
//! The attempt gets its own working folder and process group. Its stdout and stderr go to a
//! log file that is stored as an artifact when it ends; stdout lines that are events are
//! recorded and forwarded. Timeouts and cancellation send SIGTERM to the group, then SIGKILL
//! after the grace period.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_plugin::{
    Event, InputArtifact, Invocation, ResumeFrom, ENGINE_PID_ENV, INVOCATION_ENV, PROTOCOL_VERSION,
};
use leo_state::{
    AttemptFinish, AttemptStatus, CheckpointRecord, NewAttempt, OutputArtifact, StageCompletion,
    StageStatus, State,
};
use leo_store::ArtifactStore;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::check::Checked;
use crate::observer::{EngineEvent, Observer};
use crate::scheduler::ResolvedInput;

/// Lines of stderr kept to explain a failure.
const ERROR_TAIL_LINES: usize = 8;
/// At most one progress event per attempt per this interval is written to the database.
const PROGRESS_RECORD_INTERVAL: Duration = Duration::from_secs(1);

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
}

#[derive(Debug)]
pub(crate) enum AttemptOutcome {
    Succeeded { outputs: Vec<OutputArtifact> },
    Failed { error: String },
    Cancelled,
}

enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
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

    let invocation = Invocation {
        protocol: PROTOCOL_VERSION,
        run_id: spec.run_id.clone(),
        stage: spec.stage.clone(),
        attempt: spec.number,
        plugin: plugin.name.clone(),
        params: stage_spec.params.clone(),
        inputs,
        outputs: plugin.outputs.clone(),
        output_dir: output_dir.clone(),
        checkpoint_dir: checkpoint_dir.clone(),
        resume_from: resume_from.clone(),
        work_dir: work.clone(),
        rank: 0,
        world_size: 1,
        rendezvous: None,
    };
    let invocation_path = work.join("invocation.json");
    std::fs::write(&invocation_path, serde_json::to_vec_pretty(&invocation)?)
        .with_context(|| format!("writing {}", invocation_path.display()))?;

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
    let result = supervise(
        &spec,
        &attempt_id,
        &invocation_path,
        &log_path,
        stage_spec.timeout,
    )
    .await;
    let ended_at = leo_state::now_ms();
    process_gone.fire();
    let log = store_log(&spec.store, &log_path).await;

    let (status, exit_code, error, outcome) = match result {
        Ok((Exit::Code(0), reported)) => {
            match collect_outputs(&spec, &plugin.outputs, &output_dir, reported).await {
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
            }
        }
        Ok((Exit::Code(code), _)) => {
            let msg = failure_message(&format!("exited with code {code}"), &log_path);
            (
                AttemptStatus::Failed,
                Some(code),
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok((Exit::Signal(sig), _)) => {
            let msg = failure_message(&format!("killed by signal {sig}"), &log_path);
            (
                AttemptStatus::Failed,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok((Exit::TimedOut, _)) => {
            let msg = format!(
                "timed out after {}",
                humanize(stage_spec.timeout.unwrap_or_default())
            );
            (
                AttemptStatus::TimedOut,
                None,
                Some(msg.clone()),
                AttemptOutcome::Failed { error: msg },
            )
        }
        Ok((Exit::Cancelled, _)) => (
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
    Ok(outcome)
}

/// Runs the worker process to its end, handling events, timeout and cancellation.
async fn supervise(
    spec: &AttemptSpec,
    attempt_id: &str,
    invocation_path: &Path,
    log_path: &Path,
    timeout: Option<Duration>,
) -> Result<(Exit, BTreeMap<String, PathBuf>)> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let plugin = &spec.checked.plugins[&spec.stage];
    let log = Arc::new(Mutex::new(
        std::fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    ));

    let (program, args) = plugin
        .command
        .split_first()
        .context("plugin has no command")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(invocation_path)
        .current_dir(&spec.work_dir)
        .envs(&stage_spec.env)
        .env(INVOCATION_ENV, invocation_path)
        .env("LEO_RUN_ID", &spec.run_id)
        .env("LEO_STAGE", &spec.stage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Always set: a stage that asked for no GPU must not see (and grab) any.
    cmd.env("CUDA_VISIBLE_DEVICES", spec.gpus.join(","));
    // A worker must die with the engine instead of running on unsupervised (resume reruns it).
    // `leo worker` arranges that itself (so the spawn can use the fast posix_spawn path);
    // external plugins get it between fork and exec.
    cmd.env(ENGINE_PID_ENV, std::process::id().to_string());
    if !plugin.builtin {
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} for stage {}",
            program.to_string_lossy(),
            spec.stage
        )
    })?;
    let pid = child
        .id()
        .context("worker exited before it could be tracked")? as i32;
    spec.state
        .set_attempt_pid(attempt_id, i64::from(pid))
        .await?;

    // From here on the process group must not outlive this function, whatever happens.
    let group = ProcessGroup::new(pid);
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr_task = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            while let Ok(n) = read_chunk(&mut reader, &mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut f) = log.lock() {
                    let _ = f.write_all(&buf);
                }
                buf.clear();
            }
        })
    };

    let mut reported: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut seq: i64 = 0;
    let mut progress = ProgressThrottle::default();
    let mut cancel = spec.cancel.clone();
    let mut cancel_open = true;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stdout_open = true;
    // Set when the worker exits on its own; stdout is then drained (bounded: a detached
    // descendant may hold it open).
    let mut exited: Option<Exit> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    // Set when the engine asked the group to stop (timeout, cancel): why, and when to SIGKILL.
    let mut stopping: Option<(Exit, tokio::time::Instant)> = None;

    let result: Result<Exit> = async {
        loop {
            if exited.is_some() && !stdout_open {
                break;
            }
            tokio::select! {
                read = read_chunk(&mut reader, &mut line), if stdout_open => {
                    match read {
                        Ok(0) | Err(_) => stdout_open = false,
                        Ok(_) => {
                            if let Ok(mut f) = log.lock() {
                                let _ = f.write_all(&line);
                            }
                            let text = String::from_utf8_lossy(&line).into_owned();
                            line.clear();
                            // Events are read while stopping too: a checkpoint written on
                            // SIGTERM must not be lost.
                            if let Some(event) = Event::parse_line(&text) {
                                seq += 1;
                                handle_event(spec, attempt_id, seq, event, &mut reported, &mut progress, &log)
                                    .await?;
                            }
                        }
                    }
                }
                status = child.wait(), if exited.is_none() => {
                    let status = status.context("waiting for the worker")?;
                    use std::os::unix::process::ExitStatusExt;
                    exited = Some(match (status.code(), status.signal()) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(sig)) => Exit::Signal(sig),
                        _ => Exit::Code(-1),
                    });
                    // Whatever the worker left running (a background process) goes with it.
                    group.signal(libc::SIGKILL);
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = sleep_until(progress.flush_at()), if progress.pending.is_some() => {
                    progress.flush(&spec.state, attempt_id).await?;
                }
                _ = sleep_until(drain_until), if exited.is_some() && stdout_open => {
                    stdout_open = false;
                }
                _ = sleep_until(deadline), if stopping.is_none() && exited.is_none() => {
                    group.signal(libc::SIGTERM);
                    stopping = Some((Exit::TimedOut, tokio::time::Instant::now() + spec.grace));
                }
                _ = sleep_until(stopping.as_ref().map(|s| s.1)), if stopping.is_some() && exited.is_none() => {
                    group.signal(libc::SIGKILL);
                }
                changed = cancel.changed(), if cancel_open && stopping.is_none() && exited.is_none() => {
                    match changed {
                        Err(_) => cancel_open = false,
                        Ok(()) if *cancel.borrow() => {
                            group.signal(libc::SIGTERM);
                            stopping = Some((Exit::Cancelled, tokio::time::Instant::now() + spec.grace));
                        }
                        Ok(()) => {}
                    }
                }
            }
        }
        progress.flush(&spec.state, attempt_id).await?;
        Ok(match (stopping, exited) {
            (Some((reason, _)), _) => reason,
            (None, Some(exit)) => exit,
            (None, None) => Exit::Code(-1),
        })
    }
    .await;
    drop(group);
    if result.is_err() {
        // The group is dead; reap the leader so no zombie is left behind.
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, child.wait()).await;
    }
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, stderr_task).await;
    Ok((result?, reported))
}

/// Progress events reach the database at most once per [`PROGRESS_RECORD_INTERVAL`]; the
/// latest one is always written (when due, or when the attempt ends).
#[derive(Default)]
struct ProgressThrottle {
    last: Option<tokio::time::Instant>,
    pending: Option<(i64, String)>,
}

impl ProgressThrottle {
    fn flush_at(&self) -> Option<tokio::time::Instant> {
        self.last.map(|t| t + PROGRESS_RECORD_INTERVAL)
    }

    async fn flush(&mut self, state: &State, attempt_id: &str) -> Result<()> {
        if let Some((seq, payload)) = self.pending.take() {
            self.last = Some(tokio::time::Instant::now());
            state
                .record_event(attempt_id, seq, "progress", &payload)
                .await?;
        }
        Ok(())
    }
}

/// How long stdout and stderr are drained after the worker exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// Longest stdout/stderr line kept whole; longer ones are logged in pieces (and are no events).
const MAX_LINE: u64 = 1 << 20;

/// Reads up to a newline or [`MAX_LINE`] bytes. Cancel-safe: partial data stays in `buf`.
async fn read_chunk<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let budget = MAX_LINE.saturating_sub(buf.len() as u64).max(1);
    (&mut *reader).take(budget).read_until(b'\n', buf).await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Process groups of running attempts, so a forced exit can take them along.
static LIVE_GROUPS: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// SIGKILLs every running attempt's process group (for a forced exit of the engine).
pub fn kill_all_attempts() {
    if let Ok(groups) = LIVE_GROUPS.lock() {
        for pgid in groups.iter() {
            // SAFETY: signalling process groups this engine started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// An attempt's process group; SIGKILLed when dropped.
struct ProcessGroup(i32);

impl ProcessGroup {
    fn new(pgid: i32) -> ProcessGroup {
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.insert(pgid);
        }
        ProcessGroup(pgid)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the attempt's own process group (its leader is the worker).
        unsafe {
            libc::kill(-self.0, sig);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.remove(&self.0);
        }
    }
}

async fn handle_event(
    spec: &AttemptSpec,
    attempt_id: &str,
    seq: i64,
    event: Event,
    reported: &mut BTreeMap<String, PathBuf>,
    progress: &mut ProgressThrottle,
    log: &Mutex<std::fs::File>,
) -> Result<()> {
    let payload = serde_json::to_string(&event)?;
    match event {
        Event::Progress { done, total, unit } => {
            spec.observer.on(EngineEvent::Progress {
                stage: spec.stage.clone(),
                done,
                total,
                unit,
            });
            progress.pending = Some((seq, payload));
            if progress
                .flush_at()
                .is_none_or(|t| t <= tokio::time::Instant::now())
                || total == Some(done)
            {
                progress.flush(&spec.state, attempt_id).await?;
            }
        }
        Event::Metric { step, name, value } => {
            spec.state
                .record_metric(attempt_id, seq, step, &name, value)
                .await?;
        }
        Event::Checkpoint { step, path } => {
            let path = spec.work_dir.join(path);
            // A checkpoint that cannot be stored is the plugin's problem to report, not a
            // reason to kill a long training run: note it in the log and go on.
            let (digest, manifest) = match spec.store.put_path(&path).await {
                Ok(x) => x,
                Err(e) => {
                    let msg = format!(
                        "leo: checkpoint step {step} at {} was not stored: {e:#}\n",
                        path.display()
                    );
                    tracing::warn!("stage {}: {}", spec.stage, msg.trim());
                    if let Ok(mut f) = log.lock() {
                        let _ = f.write_all(msg.as_bytes());
                    }
                    return Ok(());
                }
            };
            spec.state
                .record_checkpoint(&CheckpointRecord {
                    run_id: spec.run_id.clone(),
                    stage: spec.stage.clone(),
                    attempt_id: attempt_id.to_string(),
                    step,
                    digest: digest.clone(),
                    size: manifest.total_size(),
                    files: manifest.files.len() as u64,
                })
                .await?;
            spec.state
                .record_event(attempt_id, seq, "checkpoint", &payload)
                .await?;
            spec.observer.on(EngineEvent::Checkpoint {
                stage: spec.stage.clone(),
                step,
                digest,
            });
        }
        Event::Output { name, path } => {
            spec.state
                .record_event(attempt_id, seq, "output", &payload)
                .await?;
            reported.insert(name, spec.work_dir.join(path));
        }
        Event::Log { .. } => {
            spec.state
                .record_event(attempt_id, seq, "log", &payload)
                .await?;
        }
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

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
