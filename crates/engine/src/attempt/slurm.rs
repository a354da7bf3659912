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
/// Longest a cancelled job may take to be reported over before the engine stops waiting.
const CANCEL_WAIT: Duration = Duration::from_secs(120);

/// Jobs this engine has submitted and not seen end, for a forced exit.
static LIVE_JOBS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `scancel`s every job this engine still has in Slurm (for a forced exit of the engine).
pub fn cancel_all_jobs() {
    let ids: Vec<String> = LIVE_JOBS
        .lock()
        .map(|j| j.iter().cloned().collect())
        .unwrap_or_default();
    leo_slurm::cancel_now(&ids);
}

struct LiveJob(String);

impl LiveJob {
    fn new(id: &str) -> LiveJob {
        if let Ok(mut j) = LIVE_JOBS.lock() {
            j.insert(id.to_string());
        }
        LiveJob(id.to_string())
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        if let Ok(mut j) = LIVE_JOBS.lock() {
            j.remove(&self.0);
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

/// The `sbatch` script of an attempt of `stage` in `work_dir`, and the resubmission limit.
pub fn job_script(
    checked: &Checked,
    stage: &str,
    run_id: &str,
    number: u32,
    work_dir: &Path,
    profile: &SiteProfile,
) -> Result<(String, u32)> {
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
    Ok((script, options.resubmits.unwrap_or(DEFAULT_RESUBMITS)))
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
}

/// Submits the attempt's job and follows it to its end.
pub(super) async fn supervise_slurm(
    spec: &AttemptSpec,
    attempt_id: &str,
    invocation: &Path,
    log_path: &Path,
    timeout: Option<Duration>,
) -> Result<(Supervised, u32)> {
    let stage_spec = &spec.checked.workflow.stages[&spec.stage];
    let profile = SiteProfile::load()?;
    let mut secrets = Secrets::from_environment();
    let mut env = secrets.resolve(&stage_spec.env)?;
    env.insert("LEO_RUN_ID".into(), spec.run_id.clone());
    env.insert("LEO_STAGE".into(), spec.stage.clone());
    let log = Arc::new(LogSink::create(log_path, secrets)?);
    let (script, resubmits) = job_script(
        &spec.checked,
        &spec.stage,
        &spec.run_id,
        spec.number,
        &spec.work_dir,
        &profile,
    )?;
    debug_assert_eq!(invocation, spec.work_dir.join("invocation.json"));
    let script_path = spec.work_dir.join("job.sbatch");
    std::fs::write(&script_path, script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    let script = script_path;

    let id = leo_slurm::submit(&script, &env)
        .await
        .with_context(|| format!("stage {}: submitting its Slurm job", spec.stage))?;
    let _live = LiveJob::new(&id);
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
    let deadline = timeout.map(|t| started + t);
    let mut running_since: Option<tokio::time::Instant> = None;
    let mut stopping: Option<(Stop, tokio::time::Instant)> = None;
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
                match leo_slurm::job_status(&id).await {
                    Ok(Some(JobStatus::Over(f))) => break f,
                    Ok(Some(JobStatus::Active(state))) => {
                        if state == "RUNNING" {
                            let since = *running_since.get_or_insert(now);
                            if stopping.is_none() && silent_for(&heartbeat_file, now - since) > profile.heartbeat_timeout {
                                log.write(format!(
                                    "leo: rank 0 of Slurm job {id} sent no heartbeat for {}; cancelling the job\n",
                                    crate::attempt::format_duration(profile.heartbeat_timeout)
                                ).as_bytes());
                                leo_slurm::cancel(&id).await?;
                                stopping = Some((Stop::NoHeartbeat, now));
                            }
                        }
                    }
                    // Not known yet (accounting lags): ask again at the next poll.
                    Ok(None) => {}
                    Err(e) => tracing::warn!("stage {}: asking Slurm about job {id}: {e:#}", spec.stage),
                }
                if let Some((_, since)) = stopping {
                    if now - since > CANCEL_WAIT {
                        anyhow::bail!("Slurm job {id} was cancelled but is still not over after {}; see `squeue -j {id}`",
                            crate::attempt::format_duration(CANCEL_WAIT));
                    }
                }
            }
            _ = sleep_until(deadline), if stopping.is_none() => {
                log.write(format!("leo: stage timeout reached; cancelling Slurm job {id}\n").as_bytes());
                leo_slurm::cancel(&id).await?;
                stopping = Some((Stop::TimedOut, tokio::time::Instant::now()));
            }
            changed = cancel.changed(), if cancel_open && stopping.is_none() => {
                match changed {
                    Err(_) => cancel_open = false,
                    Ok(()) if *cancel.borrow() => {
                        leo_slurm::cancel(&id).await?;
                        stopping = Some((Stop::Cancelled, tokio::time::Instant::now()));
                    }
                    Ok(()) => {}
                }
            }
        }
    };
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

    let exit = match stopping.map(|s| s.0) {
        Some(Stop::Cancelled) => Exit::Cancelled,
        Some(Stop::TimedOut) => Exit::TimedOut,
        Some(Stop::NoHeartbeat) => Exit::Interrupted(format!(
            "rank 0 of Slurm job {id} sent no heartbeat for {}; the job was cancelled",
            crate::attempt::format_duration(profile.heartbeat_timeout)
        )),
        None => match ended.state.as_str() {
            "COMPLETED" => Exit::Code(ended.exit_code),
            "FAILED" if ended.signal != 0 && ended.exit_code == 0 => Exit::Signal(ended.signal),
            "FAILED" => Exit::Code(ended.exit_code),
            // Reaching the time limit is how long trainings on capped partitions go on: a
            // new job resumes, provided this one saved progress.
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
        resubmits,
    ))
}

/// How long the heartbeat file has not changed (or, before the first beat, how long the job
/// has run).
fn silent_for(heartbeat: &Path, running_for: Duration) -> Duration {
    match std::fs::metadata(heartbeat).and_then(|m| m.modified()) {
        Ok(t) => SystemTime::now().duration_since(t).unwrap_or_default(),
        Err(_) => running_for,
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
