//! `leo verify ARTIFACT` and `leo gc`: checking and tidying the artifact store.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use leo_state::State;
use leo_store::ArtifactStore;

use super::lineage::resolve;
use super::{state_location, DEFAULT_STORE};

/// The store named by `--store` / `LEO_STORE_URL`, else the latest run's, else the default.
async fn open_store(state: &State, flag: Option<String>) -> Result<ArtifactStore> {
    let url = match flag {
        Some(url) => url,
        None => state
            .latest_run(None)
            .await?
            .map_or_else(|| DEFAULT_STORE.to_string(), |r| r.store_url),
    };
    ArtifactStore::open(&url)
}

pub async fn verify(
    state_flag: Option<String>,
    artifact: &str,
    store: Option<String>,
) -> Result<ExitCode> {
    let state = State::open_existing(&state_location(state_flag, None)).await?;
    let digest = resolve(&state, artifact).await?;
    let store = open_store(&state, store).await?;
    let report = store.verify(&digest).await?;
    if report.problems.is_empty() {
        println!(
            "{digest}: intact ({} files, {} bytes re-read and hashed, in {})",
            report.files,
            report.bytes,
            store.url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{digest}: {} of {} files are bad in {}:",
        report.problems.len(),
        report.files,
        store.url()
    );
    for p in &report.problems {
        eprintln!("  {p}");
    }
    Ok(ExitCode::from(1))
}

pub async fn gc(
    state_flag: Option<String>,
    delete: bool,
    min_age: Duration,
    store: Option<String>,
) -> Result<ExitCode> {
    let state = State::open_existing(&state_location(state_flag, None)).await?;
    let store = open_store(&state, store).await?;
    let live: HashSet<String> = state.all_artifacts().await?.into_iter().collect();
    let garbage = store.garbage(&live, min_age).await?;
    let what = format!(
        "{} manifests, {} blobs and {} records, {} bytes, in {} (kept: {} artifacts recorded in the state; objects younger than {} left alone)",
        garbage.manifests.len(),
        garbage.blobs.len(),
        garbage.records.len(),
        garbage.bytes(),
        store.url(),
        live.len(),
        leo_engine::format_duration(min_age),
    );
    if garbage.is_empty() {
        println!("nothing to collect in {}", store.url());
    } else if delete {
        store.delete(&garbage).await?;
        println!("removed {what}");
    } else {
        println!("would remove {what}; run `leo gc --delete` to remove them");
    }
    Ok(ExitCode::SUCCESS)
}
