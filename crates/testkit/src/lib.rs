//! Real servers for leo's tests, started and removed by the tests themselves, on loopback only.
//!
//! - [`Postgres`]: a throwaway PostgreSQL cluster (`initdb` + `postgres`) in a temp folder on a
//!   free port; [`Postgres::database`] makes a fresh database per test.
//! - [`S3Server`]: an S3-compatible server (`s3s-fs`) over a temp folder, with one bucket.
//! - [`FaultyProxy`]: an HTTP proxy that fails a share of requests (500/503, resets, delays).
//! - [`FakeHub`]: a Hugging Face Hub in the Hub's URL layout, with an LFS host beside it.
//! - [`SlurmCluster`]: a one-node Slurm cluster with accounting (munged, MariaDB, slurmdbd,
//!   slurmctld, slurmd) in a temp folder on free ports; [`SlurmCluster::env`] points the Slurm
//!   commands at it.

mod faulty_proxy;
mod hub;
mod postgres;
mod s3;
mod slurm;

pub use faulty_proxy::{FaultCounts, FaultyProxy};
pub use hub::{FakeHub, HubFile, HubHost, HubRepo, HubRequest};
pub use postgres::Postgres;
pub use s3::{S3Server, BUCKET};
pub use slurm::{AccountedJob, SlurmCluster};

/// A loopback port nobody listens on now (a server started on it may still lose a race: callers
/// retry with another).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether the tests run in CI (`CI=true`), where a missing server or data set is a failure,
/// never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
