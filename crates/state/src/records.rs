//! Rows and statuses.

use anyhow::{anyhow, Result};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(anyhow!("unknown {} `{other}` in the state database", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// A run as a whole.
    RunStatus { Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

status_enum!(
    /// A stage within a run.
    StageStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Cached = "cached",
        Failed = "failed",
        Cancelled = "cancelled",
        Lost = "lost",
        Skipped = "skipped",
    }
);

impl StageStatus {
    /// Finished with outputs available.
    pub fn is_done(self) -> bool {
        matches!(self, StageStatus::Succeeded | StageStatus::Cached)
    }
}

status_enum!(
    /// One process running a stage.
    AttemptStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        Lost = "lost",
    }
);

pub(crate) const RUN_COLUMNS: &str =
    "id, workflow_name, workflow_path, spec_json, store_url, status, created_at, \
     updated_at, engine_host, engine_pid, engine_heartbeat, provenance";

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow_name: String,
    pub workflow_path: String,
    #[serde(skip)]
    pub spec_json: String,
    pub store_url: String,
    pub status: RunStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub engine_host: Option<String>,
    pub engine_pid: Option<i64>,
    pub engine_heartbeat: Option<i64>,
    /// JSON: leo version, git commit and dirty flag of the workflow's repository, host.
    pub provenance: Option<String>,
}

impl RunRecord {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(RunRecord {
            id: r.try_get("id")?,
            workflow_name: r.try_get("workflow_name")?,
            workflow_path: r.try_get("workflow_path")?,
            spec_json: r.try_get("spec_json")?,
            store_url: r.try_get("store_url")?,
            status: RunStatus::parse(&r.try_get::<String, _>("status")?)?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            engine_host: r.try_get("engine_host")?,
            engine_pid: r.try_get("engine_pid")?,
            engine_heartbeat: r.try_get("engine_heartbeat")?,
            provenance: r.try_get("provenance")?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub name: String,
    pub status: StageStatus,
    pub fingerprint: Option<String>,
    #[serde(skip)]
    pub fingerprint_json: Option<String>,
    pub cached_from_run: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
    pub attempts: i64,
}

impl StageRecord {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(StageRecord {
            name: r.try_get("name")?,
            status: StageStatus::parse(&r.try_get::<String, _>("status")?)?,
            fingerprint: r.try_get("fingerprint")?,
            fingerprint_json: r.try_get("fingerprint_json")?,
            cached_from_run: r.try_get("cached_from_run")?,
            error: r.try_get("error")?,
            updated_at: r.try_get("updated_at")?,
            attempts: r.try_get("attempts")?,
        })
    }
}

pub(crate) const ATTEMPT_COLUMNS: &str =
    "id, run_id, stage, number, status, host, pid, started_at, heartbeat_at, \
     finished_at, exit_code, error, resumed_from, log_artifact, job_id";

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub id: String,
    pub run_id: String,
    pub stage: String,
    pub number: i64,
    pub status: AttemptStatus,
    pub host: String,
    pub pid: Option<i64>,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub resumed_from: Option<String>,
    pub log_artifact: Option<String>,
    /// The scheduler job that ran it (`slurm:<id>`), if any.
    pub job_id: Option<String>,
}

impl AttemptRecord {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(AttemptRecord {
            id: r.try_get("id")?,
            run_id: r.try_get("run_id")?,
            stage: r.try_get("stage")?,
            number: r.try_get("number")?,
            status: AttemptStatus::parse(&r.try_get::<String, _>("status")?)?,
            host: r.try_get("host")?,
            pid: r.try_get("pid")?,
            started_at: r.try_get("started_at")?,
            heartbeat_at: r.try_get("heartbeat_at")?,
            finished_at: r.try_get("finished_at")?,
            exit_code: r.try_get("exit_code")?,
            error: r.try_get("error")?,
            resumed_from: r.try_get("resumed_from")?,
            log_artifact: r.try_get("log_artifact")?,
            job_id: r.try_get("job_id")?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactRecord {
    pub digest: String,
    pub kind: String,
    pub size: i64,
    pub files: i64,
    pub uri: Option<String>,
    pub created_at: i64,
}

impl ArtifactRecord {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(ArtifactRecord {
            digest: r.try_get("digest")?,
            kind: r.try_get("kind")?,
            size: r.try_get("size")?,
            files: r.try_get("files")?,
            uri: r.try_get("uri")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

pub struct StageUpdate<'a> {
    pub run_id: &'a str,
    pub stage: &'a str,
    pub status: StageStatus,
    pub fingerprint: Option<&'a str>,
    pub fingerprint_json: Option<&'a str>,
    pub cached_from_run: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct OutputArtifact {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub files: u64,
}

pub struct StageCompletion<'a> {
    pub run_id: &'a str,
    pub stage: &'a str,
    pub status: StageStatus,
    pub attempt_id: Option<&'a str>,
    pub cached_from_run: Option<&'a str>,
    pub outputs: &'a [OutputArtifact],
    /// Set when the fingerprint was not recorded before (a cache hit records it here).
    pub fingerprint: Option<(&'a str, &'a str)>,
    /// The lease the work ran under: the completion is refused unless its token is still the
    /// current one (fencing), and releases it.
    pub lease: Option<&'a Lease>,
}

/// A held lease on a fingerprint, with its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fingerprint: String,
    pub token: i64,
}

pub struct NewAttempt<'a> {
    pub run_id: &'a str,
    pub stage: &'a str,
    pub number: u32,
    pub host: &'a str,
    /// (input name, artifact digest, URI for external inputs).
    pub inputs: &'a [(String, String, Option<String>)],
    pub resumed_from: Option<&'a str>,
    /// The stage's fingerprint hash and canonical JSON, recorded on the stage row.
    pub fingerprint: Option<(&'a str, &'a str)>,
}

#[derive(Clone, Copy)]
pub struct AttemptFinish<'a> {
    pub attempt_id: &'a str,
    pub status: AttemptStatus,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
    /// Log artifact digest and size.
    pub log: Option<(&'a str, u64)>,
    /// When the process ended (ms); the engine stores outputs after that.
    pub finished_at: i64,
    /// For a successful attempt: the stage's outputs, committed in the same transaction.
    pub completion: Option<&'a StageCompletion<'a>>,
}

pub struct CheckpointRecord {
    pub run_id: String,
    pub stage: String,
    pub attempt_id: String,
    pub step: u64,
    pub digest: String,
    pub size: u64,
    pub files: u64,
}

/// The latest value of one metric of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestMetric {
    pub name: String,
    pub value: f64,
    pub step: Option<u64>,
    /// The event sequence number of this (latest) report within the attempt.
    pub seq: i64,
}

/// One metric event of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRecord {
    pub stage: String,
    /// The attempt's number within the stage (1-based).
    pub attempt: u32,
    /// The event sequence number within the attempt.
    pub seq: i64,
    pub step: Option<u64>,
    pub name: String,
    pub value: f64,
    /// When the engine recorded it (ms since the Unix epoch).
    pub at: i64,
}
