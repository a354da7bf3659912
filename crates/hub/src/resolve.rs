//! From a URI to files in the cache: the revision API gives the commit and the file list, files
//! the snapshot lacks are fetched (a HEAD for the etag, then the blob unless another revision
//! already brought it), and the ref is written last, so a ref names only complete snapshots.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, Response};
use serde::Deserialize;

use crate::cache::{files_under, is_commit, RepoCache};
use crate::download::{self, Fetch};
use crate::error::HubError;
use crate::http::{Http, Target};
use crate::settings::HubSettings;
use crate::uri::HfUri;

/// A URI resolved to files in the cache.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub uri: HfUri,
    /// The commit the revision pointed at.
    pub commit: String,
    /// `snapshots/<commit>/<path>`: the file, or the folder, to read.
    pub local_path: PathBuf,
    /// The repository paths resolved (one for a file), sorted.
    pub files: Vec<String>,
}

impl Resolved {
    /// The URI at its commit (`hf://…@<commit>/…`), for lineage.
    pub fn pinned_uri(&self) -> String {
        self.uri.pinned(&self.commit)
    }
}

/// What the cache holds of a URI, found without downloading anything.
#[derive(Debug, Clone)]
pub enum CacheStatus {
    /// Every file is in the snapshot.
    Complete(Resolved),
    /// `missing` of `total` files still have to be downloaded.
    Missing {
        commit: String,
        missing: usize,
        total: usize,
    },
}

/// A Hugging Face Hub (or a mirror) with a local cache.
pub struct Hub {
    settings: HubSettings,
    http: Http,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

enum Listing {
    /// The Hub answered: the commit and the files the URI names.
    Online { commit: String, files: Vec<String> },
    /// Offline, or the Hub is unreachable: what the cache holds.
    Cached(Resolved),
}

impl Hub {
    pub fn new(settings: HubSettings) -> Result<Hub, HubError> {
        let http = Http::new(&settings)?;
        Ok(Hub { settings, http })
    }

    /// A hub configured by `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_CACHE`,
    /// `HF_HUB_OFFLINE` (see [`HubSettings::from_env`]).
    pub fn from_env() -> Result<Hub, HubError> {
        Hub::new(HubSettings::from_env())
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// Downloads what the cache lacks of `uri` and returns where it lies.
    pub async fn resolve(&self, uri: &HfUri) -> Result<Resolved, HubError> {
        let cache = RepoCache::new(&self.settings.cache_dir, uri);
        let (commit, files) = match self.listing(uri, &cache).await? {
            Listing::Cached(r) => return Ok(r),
            Listing::Online { commit, files } => (commit, files),
        };
        for file in &files {
            if !cache.has_file(&commit, file) {
                self.download(uri, &cache, &commit, file).await?;
            }
        }
        let local_path = cache.snapshot_file(&commit, &uri.path);
        if files.is_empty() {
            std::fs::create_dir_all(&local_path).map_err(crate::error::io(format!(
                "creating {}",
                local_path.display()
            )))?;
        }
        cache.write_ref(&uri.revision, &commit)?;
        Ok(Resolved {
            uri: uri.clone(),
            commit,
            local_path,
            files,
        })
    }

    /// What the cache holds of `uri`, asking the Hub only for the revision's commit and file
    /// list (nothing at all when offline); never downloads a file.
    pub async fn status(&self, uri: &HfUri) -> Result<CacheStatus, HubError> {
        let cache = RepoCache::new(&self.settings.cache_dir, uri);
        let (commit, files) = match self.listing(uri, &cache).await? {
            Listing::Cached(r) => return Ok(CacheStatus::Complete(r)),
            Listing::Online { commit, files } => (commit, files),
        };
        let missing = files.iter().filter(|f| !cache.has_file(&commit, f)).count();
        if missing > 0 || (files.is_empty() && !cache.snapshot(&commit).is_dir()) {
            return Ok(CacheStatus::Missing {
                commit,
                missing,
                total: files.len(),
            });
        }
        Ok(CacheStatus::Complete(Resolved {
            local_path: cache.snapshot_file(&commit, &uri.path),
            uri: uri.clone(),
            commit,
            files,
        }))
    }

    async fn listing(&self, uri: &HfUri, cache: &RepoCache) -> Result<Listing, HubError> {
        let not_cached = |why: String| HubError::NotCached {
            uri: uri.to_string(),
            cache: self.settings.cache_dir.clone(),
            why,
        };
        if self.settings.offline {
            return from_cache(uri, cache).map(Listing::Cached).ok_or_else(|| {
                not_cached("HF_HUB_OFFLINE is set, so nothing is downloaded".into())
            });
        }
        match self.revision_info(uri).await {
            Ok(info) => {
                let files = select(uri, &info)?;
                Ok(Listing::Online {
                    commit: info.sha,
                    files,
                })
            }
            Err(e) if e.is_unreachable() => match from_cache(uri, cache) {
                Some(r) => {
                    tracing::warn!("{e}; using the cached snapshot {}", r.commit);
                    Ok(Listing::Cached(r))
                }
                None => Err(not_cached(format!("the Hub could not be reached ({e})"))),
            },
            Err(e) => Err(e),
        }
    }

    fn target<'a>(&'a self, uri: &'a HfUri) -> Target<'a> {
        Target {
            uri,
            endpoint: &self.settings.endpoint,
        }
    }

    /// `GET {endpoint}/api/{kind}s/{repo}/revision/{revision}`.
    async fn revision_info(&self, uri: &HfUri) -> Result<RevisionInfo, HubError> {
        let (owner, name) = uri.repo.split_once('/').unwrap_or((&uri.repo, ""));
        let url = self.http.url(&[
            "api",
            uri.kind.plural(),
            owner,
            name,
            "revision",
            &uri.revision,
        ]);
        let response = self
            .retrying(|| {
                self.http.send(
                    Method::GET,
                    url.clone(),
                    None,
                    Some(self.http.api_timeout),
                    false,
                )
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.http.error_of(response, &self.target(uri)).await);
        }
        let bad = |why: String| HubError::Protocol {
            uri: uri.to_string(),
            why,
        };
        let body = response.text().await.map_err(|source| HubError::Network {
            what: format!("reading {}", crate::http::redact(&url)),
            source,
        })?;
        let info: RevisionInfo = serde_json::from_str(&body)
            .map_err(|e| bad(format!("the revision API's JSON: {e}")))?;
        if !is_commit(&info.sha) {
            return Err(bad(format!("`{}` is no commit hash", info.sha)));
        }
        Ok(info)
    }

    /// Retries 5xx and 429 answers of metadata requests; connection failures are not retried
    /// here (the cache may stand in, and `leo plan` must not wait).
    async fn retrying<F, Fut>(&self, mut send: F) -> Result<Response, HubError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Response, HubError>>,
    {
        let mut attempt = 0;
        loop {
            let response = send().await?;
            let s = response.status().as_u16();
            if (s >= 500 || s == 429) && attempt < self.settings.retries {
                attempt += 1;
                tokio::time::sleep(backoff(self.settings.retry_backoff, attempt)).await;
                continue;
            }
            return Ok(response);
        }
    }

    /// One file into the snapshot: its etag from a HEAD of the resolve URL (the answer that
    /// redirects an LFS file elsewhere carries it), the blob unless the cache has it, the link.
    async fn download(
        &self,
        uri: &HfUri,
        cache: &RepoCache,
        commit: &str,
        file: &str,
    ) -> Result<(), HubError> {
        let (owner, name) = uri.repo.split_once('/').unwrap_or((&uri.repo, ""));
        let mut segments: Vec<&str> = uri
            .kind
            .url_prefix()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        segments.extend([owner, name, "resolve", commit]);
        segments.extend(file.split('/'));
        let url = self.http.url(&segments);
        let head = self
            .retrying(|| {
                self.http.send(
                    Method::HEAD,
                    url.clone(),
                    None,
                    Some(self.http.api_timeout),
                    true,
                )
            })
            .await?;
        let target = self.target(uri);
        let status = head.status();
        if !status.is_success() && !status.is_redirection() {
            let mut e = self.http.error_of(head, &target).await;
            if let HubError::EntryNotFound {
                path, commit: c, ..
            } = &mut e
            {
                *path = file.to_string();
                *c = commit.to_string();
            }
            return Err(e);
        }
        let header = |name: &str| {
            head.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| normalize_etag(&e))
            .filter(|e| {
                !e.is_empty()
                    && e.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or_else(|| HubError::Protocol {
                uri: uri.to_string(),
                why: format!("no usable ETag for {file}"),
            })?;
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(c) = header("x-repo-commit").filter(|c| c != commit) {
            return Err(HubError::Protocol {
                uri: uri.to_string(),
                why: format!("asked for {file} at {commit}, the Hub answered for {c}"),
            });
        }
        // Where the bytes are: where the answer redirects to (an LFS file), else the URL that
        // answered (after any redirects within the endpoint, e.g. of a renamed repository).
        let location = if status.is_redirection() {
            header("location").and_then(|l| head.url().join(&l).ok())
        } else {
            Some(head.url().clone())
        };
        let blob = cache.blob(&etag);
        let lock = {
            let (cache, etag) = (cache.clone(), etag.clone());
            tokio::task::spawn_blocking(move || cache.lock(&etag))
                .await
                .map_err(|e| HubError::Io {
                    what: format!("locking the download of {file}"),
                    source: std::io::Error::other(e),
                })??
        };
        if !blob.is_file() {
            if let Some(dir) = blob.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(crate::error::io(format!("creating {}", dir.display())))?;
            }
            let fetch = Fetch {
                url: location.unwrap_or(url),
                file,
                etag: &etag,
                size,
                blob,
            };
            download::fetch(&self.http, &self.settings, &target, &fetch).await?;
        }
        drop(lock);
        cache.link(commit, file, &etag)
    }
}

pub(crate) fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1 << attempt.saturating_sub(1).min(4))
        .min(Duration::from_secs(8))
}

/// `"abc"`, `W/"abc"` → `abc`, as huggingface_hub normalises etags.
fn normalize_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// What the cache holds for `uri` without asking anyone: the revision's last known commit and
/// the snapshot's files under the path.
fn from_cache(uri: &HfUri, cache: &RepoCache) -> Option<Resolved> {
    let commit = cache.commit_of(&uri.revision)?;
    let local_path = cache.snapshot_file(&commit, &uri.path);
    std::fs::metadata(&local_path).ok()?;
    let files = files_under(&local_path, &uri.path);
    Some(Resolved {
        uri: uri.clone(),
        commit,
        local_path,
        files,
    })
}

/// The repository files the URI's path names: all, the one file, or a folder's files.
fn select(uri: &HfUri, info: &RevisionInfo) -> Result<Vec<String>, HubError> {
    for s in &info.siblings {
        let bad = s.rfilename.is_empty()
            || s.rfilename.starts_with('/')
            || s.rfilename
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(HubError::Protocol {
                uri: uri.to_string(),
                why: format!("unsafe file name `{}` in the listing", s.rfilename),
            });
        }
    }
    let all = info.siblings.iter().map(|s| s.rfilename.clone());
    let mut files: Vec<String> = if uri.path.is_empty() {
        all.collect()
    } else if info.siblings.iter().any(|s| s.rfilename == uri.path) {
        vec![uri.path.clone()]
    } else {
        let prefix = format!("{}/", uri.path);
        all.filter(|f| f.starts_with(&prefix)).collect()
    };
    if files.is_empty() && !uri.path.is_empty() {
        return Err(HubError::EntryNotFound {
            uri: uri.to_string(),
            path: uri.path.clone(),
            repo: uri.repo_uri(),
            commit: info.sha.clone(),
            close: close_names(
                &uri.path,
                info.siblings.iter().map(|s| s.rfilename.as_str()),
            ),
        });
    }
    files.sort();
    Ok(files)
}

/// Up to five files or folders of the repository whose names are nearest to `wanted`.
fn close_names<'a>(wanted: &str, files: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for f in files {
        let mut end = 0;
        while let Some(i) = f[end..].find('/') {
            end += i;
            names.insert(f[..end].to_string());
            end += 1;
        }
        names.insert(f.to_string());
    }
    let mut scored: Vec<(usize, String)> = names
        .into_iter()
        .map(|n| (edit_distance(wanted, &n), n))
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_prefer_small_edits_and_include_folders() {
        let files = [
            "de/train.jsonl",
            "de/test.jsonl",
            "en/test.jsonl",
            "README.md",
        ];
        let close = close_names("de/tset.jsonl", files.into_iter());
        assert_eq!(close[0], "de/test.jsonl");
        assert!(close_names("fr", files.into_iter()).contains(&"de".to_string()));
    }

    #[test]
    fn etags_lose_quotes_and_weak_prefixes() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }
}
