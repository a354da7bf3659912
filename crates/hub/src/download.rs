//! One file's bytes into `blobs/<etag>`: written to `<etag>.incomplete` first, continued with
//! `Range: bytes=N-` after a cut (within a call, with backoff, and across runs: the partial
//! file stays), checked for size and, when the etag is an LFS SHA-256, for content, then renamed.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use reqwest::header::CONTENT_RANGE;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::error::{io, HubError};
use crate::http::{Http, Target};
use crate::settings::HubSettings;

/// One blob to fetch.
pub(crate) struct Fetch<'a> {
    /// Where the bytes are (the resolve URL, or where it redirected to).
    pub url: Url,
    /// The repository path, for messages and the progress bar.
    pub file: &'a str,
    pub etag: &'a str,
    pub size: Option<u64>,
    pub blob: PathBuf,
}

pub(crate) async fn fetch(
    http: &Http,
    settings: &HubSettings,
    target: &Target<'_>,
    f: &Fetch<'_>,
) -> Result<(), HubError> {
    let partial = PathBuf::from(format!("{}.incomplete", f.blob.display()));
    let resumed = tokio::fs::metadata(&partial)
        .await
        .is_ok_and(|m| m.len() > 0);
    match fetch_once(http, settings, target, f).await {
        // A partial file left by someone else, or a corrupt one, is no prefix of the blob: it
        // has been removed, so one more pass starts from the first byte.
        Err(e @ HubError::Integrity { .. }) if resumed => {
            tracing::warn!("{e}; downloading {} again from the start", f.file);
            fetch_once(http, settings, target, f).await
        }
        other => other,
    }
}

async fn fetch_once(
    http: &Http,
    settings: &HubSettings,
    target: &Target<'_>,
    f: &Fetch<'_>,
) -> Result<(), HubError> {
    let partial = PathBuf::from(format!("{}.incomplete", f.blob.display()));
    let sha256 = is_sha256(f.etag);
    // What is already there (from an earlier, cut transfer), hashed once so the check at the
    // end needs no second pass over a large file.
    let (mut have, mut hasher) = {
        let p = partial.clone();
        tokio::task::spawn_blocking(move || prefix_state(&p, sha256))
            .await
            .map_err(|e| HubError::Io {
                what: format!("reading {}", partial.display()),
                source: std::io::Error::other(e),
            })??
    };
    if f.size.is_some_and(|s| have > s) {
        have = 0;
        hasher = Sha256::new();
        truncate(&partial).await?;
    }
    let bar = Progress::start(settings, target, f, have);
    let mut attempt = 0u32;
    loop {
        if f.size == Some(have) {
            break;
        }
        let result = transfer(http, target, f, &partial, &mut have, &mut hasher, &bar)
            .await
            .and_then(|()| match f.size {
                Some(size) if have < size => Err(HubError::Cut {
                    what: format!("downloading {} of {}", f.file, target.uri),
                    have,
                    size,
                }),
                _ => Ok(()),
            });
        match result {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < settings.retries => {
                attempt += 1;
                let delay = crate::resolve::backoff(settings.retry_backoff, attempt);
                tracing::warn!(
                    "{}: {} cut at {have} bytes ({e}); retry {attempt} of {} in {delay:?}",
                    target.uri,
                    f.file,
                    settings.retries
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
    bar.finish();
    let bad = |why: String| HubError::Integrity {
        uri: target.uri.to_string(),
        file: f.file.to_string(),
        why,
    };
    let check = match f.size {
        Some(size) if size != have => Err(bad(format!("{have} bytes, expected {size}"))),
        _ if sha256 && hex::encode(hasher.finalize()) != f.etag => {
            Err(bad(format!("its SHA-256 is not the etag {}", f.etag)))
        }
        _ => Ok(()),
    };
    if let Err(e) = check {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, &f.blob)
        .await
        .map_err(io(format!("renaming {} into place", partial.display())))
}

/// One GET, appending to the partial file from `have` on.
async fn transfer(
    http: &Http,
    target: &Target<'_>,
    f: &Fetch<'_>,
    partial: &Path,
    have: &mut u64,
    hasher: &mut Sha256,
    bar: &Progress,
) -> Result<(), HubError> {
    let mut response = http
        .send(Method::GET, f.url.clone(), Some(*have), None, false)
        .await?;
    if response.status() == StatusCode::RANGE_NOT_SATISFIABLE && *have > 0 {
        // The partial file is no prefix of this blob (it is as long or longer): start over.
        *have = 0;
        *hasher = Sha256::new();
        truncate(partial).await?;
        response = http
            .send(Method::GET, f.url.clone(), None, None, false)
            .await?;
    }
    let status = response.status();
    if !status.is_success() {
        return Err(http.error_of(response, target).await);
    }
    let resumed = status == StatusCode::PARTIAL_CONTENT;
    if resumed {
        let start = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if start != Some(*have) {
            return Err(HubError::Protocol {
                uri: target.uri.to_string(),
                why: format!("asked for {} from byte {have}, got {start:?}", f.file),
            });
        }
    } else if *have > 0 {
        // The server ignored the range and sends everything.
        *have = 0;
        *hasher = Sha256::new();
        truncate(partial).await?;
    }
    bar.set(*have);
    let what = || format!("writing {}", partial.display());
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .await
        .map_err(io(what()))?;
    loop {
        let chunk = response.chunk().await.map_err(|source| HubError::Network {
            what: format!("downloading {} of {}", f.file, target.uri),
            source,
        });
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                out.flush().await.map_err(io(what()))?;
                return Err(e);
            }
        };
        out.write_all(&chunk).await.map_err(io(what()))?;
        hasher.update(&chunk);
        *have += chunk.len() as u64;
        bar.set(*have);
    }
    out.flush().await.map_err(io(what()))?;
    out.sync_all().await.map_err(io(what()))
}

async fn truncate(path: &Path) -> Result<(), HubError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// The length of a partial file and, when the content will be checked, its hash so far.
fn prefix_state(path: &Path, hash: bool) -> Result<(u64, Sha256), HubError> {
    let mut hasher = Sha256::new();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, hasher)),
        Err(e) => return Err(io(format!("opening {}", path.display()))(e)),
    };
    if !hash {
        let len = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?
            .len();
        return Ok((len, hasher));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok((len, hasher));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// LFS etags are the file's SHA-256; git blob etags are SHA-1 of a header plus the content.
pub(crate) fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A bar on a terminal, or a log line per file elsewhere (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(settings: &HubSettings, target: &Target<'_>, f: &Fetch<'_>, have: u64) -> Progress {
        let size = f
            .size
            .map_or("unknown size".to_string(), |s| format!("{s} bytes"));
        if settings.progress_bars && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                f.size,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(format!("{} {}", target.uri.repo_uri(), f.file));
            bar.set_position(have);
            return Progress { bar: Some(bar) };
        }
        if have > 0 {
            tracing::info!(
                "{}: resuming {} ({size}) at byte {have}",
                target.uri.repo_uri(),
                f.file
            );
        } else {
            tracing::info!("{}: downloading {} ({size})", target.uri.repo_uri(), f.file);
        }
        Progress { bar: None }
    }

    fn set(&self, position: u64) {
        if let Some(b) = &self.bar {
            b.set_position(position);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
