//! Supervising an attempt's worker process: reading its events, enforcing its timeout,
//! cancelling it, and making sure its process group never outlives the attempt.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use leo_plugin::{Event, ENGINE_PID_ENV, INVOCATION_ENV};
use leo_state::{CheckpointRecord, State};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{AttemptSpec, Exit};
use crate::observer::EngineEvent;
use crate::secrets::Secrets;

/// At most one progress event per attempt per this interval is written to the database.
const PROGRESS_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// The attempt's log file. Everything written to it is masked for secrets first.
struct LogSink {
    file: Mutex<std::fs::File>,
    secrets: Secrets,
}

impl LogSink {
    fn write(&self, bytes: &[u8]) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(&self.secrets.redact_bytes(bytes));
        }
    }
}

/// Runs the worker process to its end, handling events, timeout and cancellation.
pub(super) async fn supervise(
    spec: &AttemptSpec,
    attempt_id: &str,
    invocation_path: &Path,
    log_path: &Path,
    timeout: Option<Duration>,
) -> Result<(Exit, BTreeMap<String, PathBuf>)> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let plugin = &spec.checked.plugins[&spec.stage];
    let mut secrets = Secrets::from_environment();
    let env = secrets.resolve(&stage_spec.env)?;
    let log = Arc::new(LogSink {
        file: Mutex::new(
            std::fs::File::create(log_path)
                .with_context(|| format!("creating {}", log_path.display()))?,
        ),
        secrets,
    });

    let (program, args) = plugin
        .command
        .split_first()
        .context("plugin has no command")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(invocation_path)
        .current_dir(&spec.work_dir)
        .envs(&env)
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
                log.write(&buf);
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
                            log.write(&line);
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
    log: &LogSink,
) -> Result<()> {
    let payload = log.secrets.redact(&serde_json::to_string(&event)?);
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
                    log.write(msg.as_bytes());
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
        Event::Environment { .. } => {
            spec.state
                .record_event(attempt_id, seq, "environment", &payload)
                .await?;
        }
    }
    Ok(())
}
