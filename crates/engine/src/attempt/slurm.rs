//! An attempt as a Slurm job: `sbatch` of a generated script (`job.sbatch` in the attempt's
//! folder), whose `srun` step starts one `leo worker-rank` per rank on the allocated nodes.
//!
//! The attempt's folder must be visible from the compute nodes (a shared filesystem), as it is
//! for every Slurm workflow tool: rank 0's stdout (`rank-0.out`) is read as it grows for the
//! stage's events; each rank touches `heartbeat-RANK` while it lives. The job's state comes
//! from `scontrol`/`sacct` every `poll_interval`. Ctrl-C and the stage's timeout `scancel` the
//! job and wait until Slurm reports it over. How the job ended decides what happens next:
//! a failure of the stage (non-zero exit, out of memory) counts against the stage's `retries`;
//! preemption, node failure, a `scancel` by someone else, a silent rank 0, or the time limit
//! reached after a checkpoint is an interruption, and the stage is resubmitted to resume.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use leo_plugin::Event;
use leo_slurm::{JobScript, JobStatus, SiteProfile};

use super::supervise::{handle_event, LogSink, ProgressThrottle, Supervised};
use super::{AttemptSpec, Exit};
use crate::check::Checked;
use crate::observer::EngineEvent;
use crate::secrets::Secrets;

/// How often rank 0's output is read.
const TAIL_INTERVAL: Duration = Duration::from_millis(200);
/// Resubmissions after interruptions when neither the workflow nor the profile says.
pub(crate) const DEFAULT_RESUBMITS: u32 = 3;
/// How long Slurm may say nothing about a job (neither scontrol nor sacct knows it) before the
/// engine gives up on it as an interruption.
const UNKNOWN_LIMIT: Duration = Duration::from_secs(600);

/// Jobs this engine has submitted and not seen end, for a forced exit.
static LIVE_JOBS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `scancel`s every job this engine still has in Slurm (for a forced exit of the engine).
pub fn cancel_all_jobs() {
    let ids: Vec<String> = LIVE_JOBS
        .lock()
        .map(|j| j.iter().cloned().collect())
        .unwrap_or_default();
    if let Err(e) = leo_slurm::cancel_now(&ids) {
        eprintln!(
            "leo: {e:#}; cancel the jobs yourself: scancel {}",
            ids.join(" ")
        );
    }
}

/// A submitted job. Unless Slurm reported it over, it is cancelled when this is dropped: an
/// attempt that ends in an error must not leave its job running beside the next attempt's.
struct LiveJob {
    id: String,
    over: bool,
}

impl LiveJob {
    fn new(id: &str) -> LiveJob {
        if let Ok(mut j) = LIVE_JOBS.lock() {
            j.insert(id.to_string());
        }
        LiveJob {
            id: id.to_string(),
            over: false,
        }
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        if !self.over {
            if let Err(e) = leo_slurm::cancel_now(std::slice::from_ref(&self.id)) {
                tracing::warn!("cancelling Slurm job {}: {e:#}", self.id);
            }
        }
        if let Ok(mut j) = LIVE_JOBS.lock() {
            j.remove(&self.id);
        }
    }
}

/// The job's name in `squeue`: what and where, short enough to read.
fn job_name(stage: &str, run_id: &str) -> String {
    format!("leo.{stage}.{run_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An attempt's job as leo submits it.
pub struct JobPlan {
    pub script: String,
    /// Resubmissions after interruptions.
    pub resubmits: u32,
    /// Whether the job's time limit was stated (`time`) rather than taken from the stage's
    /// timeout: only then is reaching it an interruption to continue from.
    pub explicit_time: bool,
}

/// The `sbatch` script of an attempt of `stage` in `work_dir`, and how to treat the job.
pub fn job_script(
    checked: &Checked,
    stage: &str,
    run_id: &str,
    number: u32,
    work_dir: &Path,
    profile: &SiteProfile,
) -> Result<JobPlan> {
    let stage_spec = &checked.workflow.stages[stage];
    let options = stage_spec.slurm.over(&profile.defaults);
    // The job runs elsewhere: every path in its script is absolute.
    let work_dir = &std::path::absolute(work_dir)
        .with_context(|| format!("making {} absolute", work_dir.display()))?;
    let leo = match &profile.leo {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding leo's own path for the job")?,
    };
    // The stage's worker command as it runs on a compute node: a program that lies beside
    // this leo (leo itself, leo-torch) lies beside the profile's `leo` there.
    let here = std::env::current_exe().ok();
    let here_dir = here.as_deref().and_then(Path::parent);
    let command: Vec<String> = checked.plugins[stage]
        .command
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let path = Path::new(a);
            match (i, here_dir, profile.leo.as_deref().and_then(Path::parent)) {
                (0, Some(here), Some(there)) if path.parent() == Some(here) => there
                    .join(path.file_name().unwrap_or_default())
                    .display()
                    .to_string(),
                _ => a.to_string_lossy().into_owned(),
            }
        })
        .collect();
    let comment = format!(
        "leo {}: run {run_id}, stage {stage}, attempt {number}",
        env!("CARGO_PKG_VERSION"),
    );
    let script = JobScript {
        job_name: &job_name(stage, run_id),
        work_dir,
        options: &options,
        resources: &stage_spec.resources,
        timeout: stage_spec.timeout,
        leo: &leo,
        command: &command,
        invocation: &work_dir.join("invocation.json"),
        heartbeat: heartbeat_interval(profile),
        comment: &comment,
    }
    .render()
    .with_context(|| format!("stage {stage}: writing its sbatch script"))?;
    Ok(JobPlan {
        script,
        resubmits: options.resubmits.unwrap_or(DEFAULT_RESUBMITS),
        explicit_time: options.time_secs.is_some(),
    })
}

/// Ranks beat a few times within the timeout, so one late beat is no alarm.
fn heartbeat_interval(profile: &SiteProfile) -> Duration {
    (profile.heartbeat_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Why the engine ended the job itself.
#[derive(Clone, Copy)]
enum Stop {
    TimedOut,
    Cancelled,
    NoHeartbeat,
    /// Slurm stopped answering about the job.
    Unknown,
}

/// Submits the attempt's job and follows it to its end.
pub(super) async fn supervise_slurm(
    spec: &AttemptSpec,
    attempt_id: &str,
    log_path: &Path,
    timeout: Option<Duration>,
) -> Result<(Supervised, u32, bool)> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let profile = SiteProfile::load()?;
    let mut secrets = Secrets::from_environment();
    let mut env = secrets.resolve(&stage_spec.env)?;
    env.insert("LEO_RUN_ID".into(), spec.run_id.clone());
    env.insert("LEO_STAGE".into(), spec.stage.clone());
    let log = Arc::new(LogSink::create(log_path, secrets)?);
    let plan = job_script(
        &spec.checked,
        &spec.stage,
        &spec.run_id,
        spec.number,
        &spec.work_dir,
        &profile,
    )?;
    let script_path = spec.work_dir.join("job.sbatch");
    std::fs::write(&script_path, &plan.script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    let script = script_path;

    let id = leo_slurm::submit(&script, &env)
        .await
        .with_context(|| format!("stage {}: submitting its Slurm job", spec.stage))?;
    let mut live = LiveJob::new(&id);
    let job = format!("slurm:{id}");
    spec.state.set_attempt_job(attempt_id, &job).await?;
    spec.observer.on(EngineEvent::JobSubmitted {
        stage: spec.stage.clone(),
        job: job.clone(),
    });
    log.write(format!("leo: submitted {} as Slurm job {id}\n", script.display()).as_bytes());

    let mut events = Tail::new(spec.work_dir.join("rank-0.out"));
    let heartbeat_file = spec.work_dir.join("heartbeat-0");
    let mut reported = BTreeMap::new();
    let mut progress = ProgressThrottle::default();
    let mut seq: i64 = 0;
    let mut checkpoints = 0u32;
    let mut cancel = spec.cancel.clone();
    let mut cancel_open = true;
    let started = tokio::time::Instant::now();
    // The stage's timeout counts from when the job starts running, not from its submission:
    // time in the queue is the cluster's, not the stage's.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut running_since: Option<tokio::time::Instant> = None;
    let mut beat = Heartbeat::default();
    let mut unknown_since: Option<tokio::time::Instant> = None;
    let mut stopping: Option<Stop> = None;
    let mut next_poll = started;
    let mut tick = tokio::time::interval(TAIL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {
                for line in events.read_lines()? {
                    log.write(line.as_bytes());
                    if let Some(event) = Event::parse_line(&line) {
                        seq += 1;
                        if matches!(event, Event::Checkpoint { .. }) {
                            checkpoints += 1;
                        }
                        handle_event(spec, attempt_id, seq, event, &mut reported, &mut progress, &log).await?;
                    }
                }
                if progress.flush_at().is_some_and(|t| t <= tokio::time::Instant::now()) {
                    progress.flush(&spec.state, attempt_id).await?;
                }
                let now = tokio::time::Instant::now();
                if now < next_poll {
                    continue;
                }
                next_poll = now + profile.poll_interval;
                if stopping.is_some() {
                    // Again at every poll until Slurm reports the job over: a first scancel
                    // may have failed on a busy controller.
                    if let Err(e) = leo_slurm::cancel(&id).await {
                        tracing::warn!("stage {}: {e:#}", spec.stage);
                    }
                }
                let status = leo_slurm::job_status(&id).await;
                match &status {
                    Ok(Some(_)) => unknown_since = None,
                    Ok(None) | Err(_) => {
                        if let Err(e) = &status {
                            tracing::warn!("stage {}: asking Slurm about job {id}: {e:#}", spec.stage);
                        }
                        let since = *unknown_since.get_or_insert(now);
                        if now - since > UNKNOWN_LIMIT {
                            log.write(format!(
                                "leo: Slurm has said nothing about job {id} for {}; giving it up\n",
                                crate::attempt::format_duration(UNKNOWN_LIMIT)
                            ).as_bytes());
                            stopping = Some(Stop::Unknown);
                            break leo_slurm::FinalState { state: "UNKNOWN".into(), exit_code: 0, signal: 0 };
                        }
                    }
                }
                match status {
                    Ok(Some(JobStatus::Over(f))) => break f,
                    Ok(Some(JobStatus::Active(state))) if state == "RUNNING" => {
                        let since = *running_since.get_or_insert(now);
                        if deadline.is_none() {
                            deadline = timeout.map(|t| since + t);
                        }
                        if stopping.is_none() && beat.silent_for(&heartbeat_file, now - since) > profile.heartbeat_timeout {
                            log.write(format!(
                                "leo: rank 0 of Slurm job {id} sent no heartbeat for {}; cancelling the job\n",
                                crate::attempt::format_duration(profile.heartbeat_timeout)
                            ).as_bytes());
                            if let Err(e) = leo_slurm::cancel(&id).await {
                                tracing::warn!("stage {}: {e:#}", spec.stage);
                            }
                            stopping = Some(Stop::NoHeartbeat);
                        }
                    }
                    // Pending, suspended, completing: the heartbeat clock starts again when
                    // the job runs again.
                    Ok(Some(JobStatus::Active(_))) => {
                        running_since = None;
                        beat = Heartbeat::default();
                    }
                    Ok(None) | Err(_) => {}
                }
            }
            _ = sleep_until(deadline), if stopping.is_none() => {
                log.write(format!("leo: stage timeout reached; cancelling Slurm job {id}\n").as_bytes());
                if let Err(e) = leo_slurm::cancel(&id).await {
                    tracing::warn!("stage {}: {e:#}", spec.stage);
                }
                stopping = Some(Stop::TimedOut);
            }
            changed = cancel.changed(), if cancel_open && stopping.is_none() => {
                match changed {
                    Err(_) => cancel_open = false,
                    Ok(()) if *cancel.borrow() => {
                        if let Err(e) = leo_slurm::cancel(&id).await {
                            tracing::warn!("stage {}: {e:#}", spec.stage);
                        }
                        stopping = Some(Stop::Cancelled);
                    }
                    Ok(()) => {}
                }
            }
        }
    };
    // Slurm reported the job over (or, for `Stop::Unknown`, the engine gave up asking: the
    // drop of `live` then cancels it, in case it still exists).
    live.over = !matches!(stopping, Some(Stop::Unknown));
    // The job is over: whatever rank 0 wrote last, then the other files into the log.
    for line in events.read_lines_to_end()? {
        log.write(line.as_bytes());
        if let Some(event) = Event::parse_line(&line) {
            seq += 1;
            if matches!(event, Event::Checkpoint { .. }) {
                checkpoints += 1;
            }
            handle_event(
                spec,
                attempt_id,
                seq,
                event,
                &mut reported,
                &mut progress,
                &log,
            )
            .await?;
        }
    }
    progress.flush(&spec.state, attempt_id).await?;
    collect_logs(&spec.work_dir, stage_spec.resources.world_size, &id, &log);
    log.write(
        format!(
            "leo: Slurm job {id} ended {} (exit code {}:{})\n",
            ended.state, ended.exit_code, ended.signal
        )
        .as_bytes(),
    );

    let exit = match stopping {
        Some(Stop::Cancelled) => Exit::Cancelled,
        Some(Stop::TimedOut) => Exit::TimedOut,
        Some(Stop::NoHeartbeat) => Exit::Interrupted(format!(
            "rank 0 of Slurm job {id} sent no heartbeat for {}; the job was cancelled",
            crate::attempt::format_duration(profile.heartbeat_timeout)
        )),
        Some(Stop::Unknown) => Exit::Interrupted(format!(
            "Slurm said nothing about job {id} for {}",
            crate::attempt::format_duration(UNKNOWN_LIMIT)
        )),
        None => match ended.state.as_str() {
            "COMPLETED" => Exit::Code(ended.exit_code),
            "FAILED" if ended.signal != 0 && ended.exit_code == 0 => Exit::Signal(ended.signal),
            "FAILED" if ended.exit_code == 0 => Exit::JobFailed(format!(
                "Slurm job {id} FAILED without an exit code (a launch failure; see the job's output in the log)"
            )),
            "FAILED" => Exit::Code(ended.exit_code),
            // The stage's timeout was the job's time limit: the stage ran out of time.
            "TIMEOUT" if !plan.explicit_time => Exit::TimedOut,
            // A stated limit shorter than the stage needs is how long trainings on capped
            // partitions go on: a new job resumes, provided this one saved progress.
            "TIMEOUT" if checkpoints > 0 => Exit::Interrupted(format!(
                "Slurm job {id} reached its time limit after {checkpoints} checkpoint(s)"
            )),
            "TIMEOUT" => Exit::JobFailed(format!(
                "Slurm job {id} reached its time limit (--time) without saving a checkpoint"
            )),
            _ if ended.is_infrastructure() => {
                Exit::Interrupted(format!("Slurm job {id} ended {}", ended.state))
            }
            other => Exit::JobFailed(format!(
                "Slurm job {id} ended {other} (exit code {}:{})",
                ended.exit_code, ended.signal
            )),
        },
    };
    Ok((
        Supervised {
            exit,
            rank: 0,
            reported,
        },
        plan.resubmits,
        checkpoints > 0,
    ))
}

/// Rank 0's heartbeat file as the engine saw it, timed by the engine's clock: the node's clock
/// (the file's modification time) may differ from the login node's.
#[derive(Default)]
struct Heartbeat {
    last: Option<(SystemTime, tokio::time::Instant)>,
}

impl Heartbeat {
    /// How long the file has not changed, or before the first beat, how long the job has run.
    fn silent_for(&mut self, file: &Path, running_for: Duration) -> Duration {
        let now = tokio::time::Instant::now();
        match std::fs::metadata(file).and_then(|m| m.modified()) {
            Ok(mtime) => {
                if self.last.is_none_or(|(seen, _)| seen != mtime) {
                    self.last = Some((mtime, now));
                }
                self.last.map_or(Duration::ZERO, |(_, at)| now - at)
            }
            Err(_) => running_for,
        }
    }
}

/// The batch script's output, rank 0's stderr and the other ranks' output, appended to the log
/// (the other ranks' lines prefixed with their rank, as the local executor does).
fn collect_logs(work: &Path, world_size: u32, id: &str, log: &LogSink) {
    let append = |path: PathBuf, prefix: &str| {
        let Ok(text) = std::fs::read(&path) else {
            return;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            if prefix.is_empty() {
                log.write(format!("{line}\n").as_bytes());
            } else {
                match Event::parse_line(line) {
                    None => log.write(format!("{prefix}{line}\n").as_bytes()),
                    Some(Event::Log { level, message }) => {
                        log.write(format!("{prefix}[{level}] {message}\n").as_bytes())
                    }
                    Some(_) => {}
                }
            }
        }
    };
    append(work.join("rank-0.err"), "");
    for rank in 1..world_size {
        let prefix = format!("[rank {rank}] ");
        append(work.join(format!("rank-{rank}.out")), &prefix);
        append(work.join(format!("rank-{rank}.err")), &prefix);
    }
    append(work.join(format!("slurm-{id}.out")), "[job] ");
}

/// A file another machine appends to, read line by line as it grows.
struct Tail {
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            pos: 0,
            partial: Vec::new(),
        }
    }

    /// Complete lines (with their newline) written since the last call.
    fn read_lines(&mut self) -> Result<Vec<String>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        file.seek(SeekFrom::Start(self.pos))
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut buf = Vec::new();
        let n = file
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        self.pos += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        Ok(lines)
    }

    /// The rest, an unterminated last line included.
    fn read_lines_to_end(&mut self) -> Result<Vec<String>> {
        let mut lines = self.read_lines()?;
        if !self.partial.is_empty() {
            let mut last = String::from_utf8_lossy(&self.partial).into_owned();
            last.push('\n');
            self.partial.clear();
            lines.push(last);
        }
        Ok(lines)
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_file_is_read_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rank-0.out");
        let mut tail = Tail::new(path.clone());
        assert!(tail.read_lines().unwrap().is_empty());
        std::fs::write(&path, "one\ntw").unwrap();
        assert_eq!(tail.read_lines().unwrap(), ["one\n"]);
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        assert_eq!(tail.read_lines().unwrap(), ["two\n"]);
        assert_eq!(tail.read_lines_to_end().unwrap(), ["thr\n"]);
    }
}
