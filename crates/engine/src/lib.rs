//! The engine: checks a workflow against its plugins, plans it (fingerprints and cache), and
//! runs it (tokio scheduler; an attempt is local processes, one per rank, or one Slurm job). It never links an ML library and
//! never interprets params: plugins do.

mod attempt;
mod catalog;
mod check;
mod context;
mod estimate;
mod fingerprint;
mod observer;
mod plan;
mod provenance;
mod resources;
mod run;
mod scheduler;
mod secrets;

pub use attempt::{format_duration, job_script, kill_all_attempts, JobPlan};
pub use catalog::{Catalog, DescribeError, PluginInfo};
pub use check::{check, check_stored, Checked};
pub use context::{run_context, upstream};
pub use estimate::{estimate, CostEstimate, Hardware, StageCost, GPU_PEAKS};
pub use fingerprint::{diff_fields, Fingerprint};
pub use leo_slurm::SiteProfile;
pub use observer::{EngineEvent, Observer};
pub use plan::{plan, PlanEntry, PlanStatus};
pub use resources::Machine;
pub use run::{engine_is_gone, resume_run, start_run, EngineOptions, RunOutcome};
pub use secrets::{looks_secret, Secrets};

/// The working folder of one attempt: `WORK_ROOT/RUN/STAGE.N` (stage names have no dots).
pub fn attempt_dir(
    work_root: &std::path::Path,
    run_id: &str,
    stage: &str,
    number: u32,
) -> std::path::PathBuf {
    work_root.join(run_id).join(format!("{stage}.{number}"))
}

/// This host's name, for attempt records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
