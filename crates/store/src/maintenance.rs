//! Store upkeep: `leo verify` (every file of an artifact re-read and re-hashed) and `leo gc`
//! (manifests and blobs that no recorded artifact needs, older than a grace period).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use object_store::path::Path as StorePath;

use crate::{blob_path, manifest_path, ArtifactStore};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub files: usize,
    pub bytes: u64,
    /// One line per missing or corrupt file (empty: the artifact is intact).
    pub problems: Vec<String>,
}

/// Objects `gc` would remove.
#[derive(Debug, Default)]
pub struct Garbage {
    pub manifests: Vec<(StorePath, u64)>,
    pub blobs: Vec<(StorePath, u64)>,
    /// `.leo-artifact.json` records of artifacts that are not kept.
    pub records: Vec<(StorePath, u64)>,
}

impl Garbage {
    pub fn bytes(&self) -> u64 {
        self.manifests
            .iter()
            .chain(&self.blobs)
            .chain(&self.records)
            .map(|(_, size)| size)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.blobs.is_empty() && self.records.is_empty()
    }
}

impl ArtifactStore {
    /// Re-reads every file of the artifact and checks its SHA-256 against the manifest.
    pub async fn verify(&self, digest: &str) -> Result<VerifyReport> {
        let manifest = self.manifest(digest).await?;
        let mut report = VerifyReport::default();
        for entry in &manifest.files {
            report.files += 1;
            let location = blob_path(&entry.sha256);
            let got = match self.inner.get(&location).await {
                Ok(result) => {
                    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                    let mut stream = result.into_stream();
                    let mut size = 0u64;
                    let mut failed = None;
                    while let Some(chunk) = stream.next().await {
                        match chunk {
                            Ok(c) => {
                                size += c.len() as u64;
                                sha2::Digest::update(&mut hasher, &c);
                            }
                            Err(e) => {
                                failed = Some(format!("{e}"));
                                break;
                            }
                        }
                    }
                    report.bytes += size;
                    match failed {
                        Some(e) => Err(format!("unreadable: {e}")),
                        None => Ok(hex::encode(sha2::Digest::finalize(hasher))),
                    }
                }
                Err(object_store::Error::NotFound { .. }) => Err("missing".to_string()),
                Err(e) => Err(format!("unreadable: {e}")),
            };
            match got {
                Ok(sha) if sha == entry.sha256 => {}
                Ok(sha) => report.problems.push(format!(
                    "{}: corrupt (blob {} hashes to {sha})",
                    entry.path, entry.sha256
                )),
                Err(why) => report
                    .problems
                    .push(format!("{}: blob {} {why}", entry.path, entry.sha256)),
            }
        }
        Ok(report)
    }

    /// Manifests of artifacts not in `live`, and blobs no live manifest lists, last modified
    /// more than `min_age` ago (younger ones may belong to an upload in progress, whose blobs go
    /// up before its manifest and its state row).
    pub async fn garbage(&self, live: &HashSet<String>, min_age: Duration) -> Result<Garbage> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::zero());
        let mut needed = HashSet::new();
        for digest in live {
            if let Ok(m) = self.manifest(digest).await {
                needed.extend(m.files.into_iter().map(|f| f.sha256));
            }
        }
        let live_manifests: HashSet<String> = live
            .iter()
            .filter_map(|d| manifest_path(d).ok())
            .map(|p| p.to_string())
            .collect();
        let mut garbage = Garbage::default();
        let mut manifests = self.inner.list(Some(&StorePath::from("manifests")));
        while let Some(meta) = manifests.next().await {
            let meta = meta.with_context(|| format!("listing manifests in {}", self.url))?;
            if meta.last_modified < cutoff && !live_manifests.contains(meta.location.as_ref()) {
                garbage.manifests.push((meta.location, meta.size));
            }
        }
        let mut blobs = self.inner.list(Some(&StorePath::from("blobs")));
        while let Some(meta) = blobs.next().await {
            let meta = meta.with_context(|| format!("listing blobs in {}", self.url))?;
            let sha = meta.location.filename().unwrap_or_default().to_string();
            if meta.last_modified < cutoff && !needed.contains(&sha) {
                garbage.blobs.push((meta.location, meta.size));
            }
        }
        let live_hex: HashSet<&str> = live
            .iter()
            .map(|d| d.trim_start_matches("sha256:"))
            .collect();
        let mut records = self.inner.list(Some(&StorePath::from("records")));
        while let Some(meta) = records.next().await {
            let meta = meta.with_context(|| format!("listing records in {}", self.url))?;
            // records/sha256/<hex>/<attempt>.leo-artifact.json
            let hex = meta.location.parts().nth(2).map(|p| p.as_ref().to_string());
            let kept = hex.as_deref().is_some_and(|h| live_hex.contains(h));
            if meta.last_modified < cutoff && !kept {
                garbage.records.push((meta.location, meta.size));
            }
        }
        Ok(garbage)
    }

    /// Removes what [`ArtifactStore::garbage`] found: manifests first (an artifact disappears
    /// whole before any of its blobs go).
    pub async fn delete(&self, garbage: &Garbage) -> Result<()> {
        for (location, _) in garbage
            .manifests
            .iter()
            .chain(&garbage.blobs)
            .chain(&garbage.records)
        {
            if let Some(root) = &self.local_root {
                // Sealed blobs are read-only; the folder permits removal.
                let _ = std::fs::remove_file(root.join(location.as_ref()));
                continue;
            }
            match self.inner.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("removing {location}")),
            }
        }
        Ok(())
    }
}
