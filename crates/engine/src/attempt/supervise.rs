//! Supervising an attempt's worker processes: reading rank 0's events and the other ranks'
//! output, enforcing the timeout, cancelling, stopping every rank when one fails, and making
//! sure the process group never outlives the attempt.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_plugin::Event;
use leo_state::{CheckpointRecord, State};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::process::{self, Launch};
use super::{AttemptSpec, Exit};
use crate::observer::EngineEvent;
use crate::secrets::Secrets;

/// At most one progress event per attempt per this interval is written to the database.
const PROGRESS_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// The attempt's log file. Everything written to it is masked for secrets first.
pub(super) struct LogSink {
    file: Mutex<std::fs::File>,
    secrets: Secrets,
}

impl LogSink {
    pub(super) fn create(path: &Path, secrets: Secrets) -> Result<LogSink> {
        Ok(LogSink {
            file: Mutex::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            secrets,
        })
    }

    pub(super) fn write(&self, bytes: &[u8]) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(&self.secrets.redact_bytes(bytes));
        }
    }
}

/// How the worker processes ended.
pub(super) struct Supervised {
    pub exit: Exit,
    /// The rank `exit` is about: the first that failed, else 0.
    pub rank: u32,
    /// Outputs rank 0 reported: name -> path.
    pub reported: BTreeMap<String, PathBuf>,
}

/// Why the engine is stopping the ranks before they end on their own.
#[derive(Clone, Copy)]
enum Stop {
    TimedOut,
    Cancelled,
    /// A rank failed: the others are stopped; the attempt fails with that rank's exit.
    RankFailed,
}

/// Runs the worker processes (one per invocation; the index is the rank) to their end,
/// handling events, timeout and cancellation.
pub(super) async fn supervise(
    spec: &AttemptSpec,
    attempt_id: &str,
    invocations: &[PathBuf],
    rendezvous: Option<&str>,
    log_path: &Path,
    timeout: Option<Duration>,
) -> Result<Supervised> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let plugin = &spec.checked.plugins[&spec.stage];
    let mut secrets = Secrets::from_environment();
    let env = secrets.resolve(&stage_spec.env)?;
    let log = Arc::new(LogSink::create(log_path, secrets)?);

    let launch = Launch {
        command: &plugin.command,
        builtin: plugin.builtin,
        work_dir: &spec.work_dir,
        env: &env,
        run_id: &spec.run_id,
        stage: &spec.stage,
        gpus: &spec.gpus,
        rendezvous,
    };
    // From here on the process group must not outlive this function, whatever happens.
    let (group, mut children) = process::spawn_ranks(&launch, invocations)?;
    spec.state
        .set_attempt_pid(attempt_id, i64::from(group.id()))
        .await?;

    // Rank 0's stdout carries the stage's events; its stderr and every other rank's output are
    // log (the others' prefixed with their rank).
    let mut copiers: Vec<JoinHandle<()>> = Vec::new();
    let mut rank0_stdout = None;
    for (rank, child) in (0u32..).zip(children.iter_mut()) {
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        if rank == 0 {
            rank0_stdout = Some(stdout);
            copiers.push(tokio::spawn(copy_log(stderr, log.clone())));
        } else {
            copiers.push(tokio::spawn(copy_rank_log(stdout, rank, log.clone())));
            copiers.push(tokio::spawn(copy_rank_log(stderr, rank, log.clone())));
        }
    }
    let stdout = rank0_stdout.context("no rank 0")?;
    // Each rank is waited for (and reaped) by a task of its own, whatever happens here.
    let world_size = children.len();
    let (exit_tx, mut exits) = mpsc::unbounded_channel();
    for (rank, mut child) in (0u32..).zip(children) {
        let tx = exit_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send((rank, child.wait().await));
        });
    }
    drop(exit_tx);

    let mut reported: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut seq: i64 = 0;
    let mut progress = ProgressThrottle::default();
    let mut cancel = spec.cancel.clone();
    let mut cancel_open = true;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stdout_open = true;
    let mut running = world_size;
    // The first rank that failed, and how.
    let mut failed: Option<(u32, Exit)> = None;
    // Set when every rank has exited; stdout is then drained (bounded: a detached descendant
    // may hold it open).
    let mut drain_until: Option<tokio::time::Instant> = None;
    // Set when the engine asked the group to stop (timeout, cancel, a failed rank): why, and
    // when to SIGKILL (cleared once sent).
    let mut stopping: Option<(Stop, Option<tokio::time::Instant>)> = None;

    let result: Result<Supervised> = async {
        loop {
            if running == 0 && !stdout_open {
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
                ended = exits.recv(), if running > 0 => {
                    let Some((rank, status)) = ended else {
                        bail!("lost track of the worker processes");
                    };
                    let exit = Exit::of(status.context("waiting for the worker")?);
                    running -= 1;
                    if !exit.is_success() && failed.is_none() && stopping.is_none() {
                        failed = Some((rank, exit));
                        if running > 0 {
                            // One rank down: the others cannot finish without it.
                            group.signal(libc::SIGTERM);
                            stopping = Some((Stop::RankFailed, Some(tokio::time::Instant::now() + spec.grace)));
                        }
                    }
                    if running == 0 {
                        // Whatever the workers left running (a background process) goes with them.
                        group.signal(libc::SIGKILL);
                        drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                    }
                }
                _ = sleep_until(progress.flush_at()), if progress.pending.is_some() => {
                    progress.flush(&spec.state, attempt_id).await?;
                }
                _ = sleep_until(drain_until), if running == 0 && stdout_open => {
                    stdout_open = false;
                }
                _ = sleep_until(deadline), if stopping.is_none() && running > 0 => {
                    group.signal(libc::SIGTERM);
                    stopping = Some((Stop::TimedOut, Some(tokio::time::Instant::now() + spec.grace)));
                }
                _ = sleep_until(stopping.and_then(|s| s.1)), if running > 0 => {
                    group.signal(libc::SIGKILL);
                    if let Some(s) = stopping.as_mut() {
                        s.1 = None;
                    }
                }
                changed = cancel.changed(), if cancel_open && stopping.is_none() && running > 0 => {
                    match changed {
                        Err(_) => cancel_open = false,
                        Ok(()) if *cancel.borrow() => {
                            group.signal(libc::SIGTERM);
                            stopping = Some((Stop::Cancelled, Some(tokio::time::Instant::now() + spec.grace)));
                        }
                        Ok(()) => {}
                    }
                }
            }
        }
        progress.flush(&spec.state, attempt_id).await?;
        let (exit, rank) = match (stopping.map(|s| s.0), failed.take()) {
            (Some(Stop::TimedOut), _) => (Exit::TimedOut, 0),
            (Some(Stop::Cancelled), _) => (Exit::Cancelled, 0),
            (_, Some((rank, exit))) => (exit, rank),
            (_, None) => (Exit::Code(0), 0),
        };
        Ok(Supervised {
            exit,
            rank,
            reported: std::mem::take(&mut reported),
        })
    }
    .await;
    drop(group);
    // The log's last lines, bounded: a detached descendant may hold a pipe open.
    let drained = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
    for mut copier in copiers {
        if tokio::time::timeout_at(drained, &mut copier).await.is_err() {
            copier.abort();
        }
    }
    result
}

/// Copies a pipe into the log as it is.
async fn copy_log(pipe: impl AsyncRead + Unpin, log: Arc<LogSink>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    while let Ok(n) = read_chunk(&mut reader, &mut buf).await {
        if n == 0 {
            break;
        }
        log.write(&buf);
        buf.clear();
    }
}

/// Copies a pipe of rank `rank` > 0 into the log, each line prefixed `[rank K] `. Its `log`
/// events become text lines; its other events are ignored (rank 0 speaks for the stage).
async fn copy_rank_log(pipe: impl AsyncRead + Unpin, rank: u32, log: Arc<LogSink>) {
    let prefix = format!("[rank {rank}] ");
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    while let Ok(n) = read_chunk(&mut reader, &mut buf).await {
        if n == 0 {
            break;
        }
        let mut out = prefix.clone().into_bytes();
        match Event::parse_line(&String::from_utf8_lossy(&buf)) {
            None => out.extend_from_slice(&buf),
            Some(Event::Log { level, message }) => {
                out.extend_from_slice(format!("[{level}] {message}").as_bytes())
            }
            Some(_) => out.clear(),
        }
        if !out.is_empty() {
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
            log.write(&out);
        }
        buf.clear();
    }
}

/// Progress events reach the database at most once per [`PROGRESS_RECORD_INTERVAL`]; the
/// latest one is always written (when due, or when the attempt ends).
#[derive(Default)]
pub(super) struct ProgressThrottle {
    last: Option<tokio::time::Instant>,
    pending: Option<(i64, String)>,
}

impl ProgressThrottle {
    pub(super) fn flush_at(&self) -> Option<tokio::time::Instant> {
        self.last.map(|t| t + PROGRESS_RECORD_INTERVAL)
    }

    pub(super) async fn flush(&mut self, state: &State, attempt_id: &str) -> Result<()> {
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

pub(super) async fn handle_event(
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
