//! What the engine tells its caller while it runs (the CLI draws progress bars from it).

use leo_state::StageStatus;

#[derive(Debug, Clone)]
pub enum EngineEvent {
    RunStarted {
        run_id: String,
        stages: usize,
    },
    StageCached {
        stage: String,
        from_run: String,
    },
    StageStarted {
        stage: String,
        attempt: u32,
        resumed_from_step: Option<u64>,
    },
    Progress {
        stage: String,
        done: u64,
        total: Option<u64>,
        unit: Option<String>,
    },
    Checkpoint {
        stage: String,
        step: u64,
        digest: String,
    },
    /// An attempt went to a cluster's scheduler as a job (`slurm:<id>`).
    JobSubmitted {
        stage: String,
        job: String,
    },
    StageRetrying {
        stage: String,
        attempt: u32,
        error: String,
        delay_ms: u64,
    },
    /// Another engine holds the lease on this stage's work (same fingerprint): this one waits,
    /// and takes the result from the cache when it lands.
    StageWaitingForLease {
        stage: String,
    },
    StageFinished {
        stage: String,
        status: StageStatus,
        seconds: f64,
        error: Option<String>,
    },
    Cancelling,
}

pub trait Observer: Send + Sync {
    fn on(&self, event: EngineEvent);
}
