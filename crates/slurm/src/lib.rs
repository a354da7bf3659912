//! Slurm for leo's engine, without the engine: the site profile (`~/.config/leo/slurm.toml`),
//! the `sbatch` script of an attempt, and the calls that submit, watch and cancel jobs through
//! the commands every Slurm cluster has (`sbatch`, `squeue`, `scontrol`, `sacct`, `scancel`).
//!
//! One attempt is one job; the job's one step (`srun`) starts one `leo worker-rank` per rank,
//! which takes its rank from the Slurm environment and runs the stage's worker.

mod client;
mod profile;
mod script;

pub use client::{cancel, cancel_now, job_status, submit, FinalState, JobStatus};
pub use profile::SiteProfile;
pub use script::{slurm_time, JobScript, RANK_ERR, RANK_OUT};
