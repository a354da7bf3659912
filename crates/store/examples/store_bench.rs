//! leo's side of `just bench store` (bench/store.py runs it): stores a file as an artifact, or
//! materialises an artifact, through `ArtifactStore` (S3 settings from the AWS environment).
//!
//! Usage: store_bench upload STORE_URL FILE | store_bench download STORE_URL DIGEST DEST_DIR
//! Prints one JSON object: {"seconds": …, "digest": …, "peak_rss_kb": …}.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use leo_store::ArtifactStore;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    let digest = match args.as_slice() {
        [op, url, file] if op == "upload" => {
            let store = ArtifactStore::open(url)?;
            store.put_path(Path::new(file)).await?.0
        }
        [op, url, digest, dest] if op == "download" => {
            let store = ArtifactStore::open(url)?;
            store.materialise(digest, Path::new(dest)).await?;
            digest.clone()
        }
        _ => bail!("usage: store_bench upload URL FILE | store_bench download URL DIGEST DEST"),
    };
    println!(
        "{}",
        serde_json::json!({
            "seconds": start.elapsed().as_secs_f64(),
            "digest": digest,
            "peak_rss_kb": peak_rss_kb(),
        })
    );
    Ok(())
}

/// VmHWM of /proc/self/status, in kB (0 where unknown).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
