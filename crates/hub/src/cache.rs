//! huggingface_hub's cache layout, so leo and Python users share downloads:
//!
//! ```text
//! {cache}/{models|datasets|spaces}--OWNER--NAME/
//!     blobs/<etag>                  the file's bytes (`<etag>.incomplete` while downloading)
//!     snapshots/<commit>/<path>     a relative symlink to ../../blobs/<etag>
//!     refs/<revision>               the commit the revision pointed at
//! {cache}/.locks/{repo folder}/<etag>.lock   flock(2), as Python's filelock takes it
//! ```

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{io, HubError};
use crate::uri::HfUri;

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub(crate) struct RepoCache {
    pub root: PathBuf,
    locks: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, uri: &HfUri) -> RepoCache {
        let folder = format!("{}--{}", uri.kind.plural(), uri.repo.replace('/', "--"));
        RepoCache {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// A file of a snapshot (`path` uses `/`).
    pub fn snapshot_file(&self, commit: &str, path: &str) -> PathBuf {
        let mut p = self.snapshot(commit);
        p.extend(path.split('/').filter(|c| !c.is_empty()));
        p
    }

    /// Whether the snapshot holds `path` as a readable file (a dangling link does not count).
    pub fn has_file(&self, commit: &str, path: &str) -> bool {
        std::fs::metadata(self.snapshot_file(commit, path)).is_ok_and(|m| m.is_file())
    }

    /// The commit a revision pointed at when last resolved; a commit names itself.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let c = text.trim();
        is_commit(c).then(|| c.to_string())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        let what = || format!("writing {}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(what()))?;
        }
        let tmp = path.with_extension("leo-tmp");
        std::fs::write(&tmp, commit).map_err(io(what()))?;
        std::fs::rename(&tmp, &path).map_err(io(what()))
    }

    /// Points `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative link, as
    /// huggingface_hub does (the cache folder can then be moved as a whole).
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<(), HubError> {
        let link = self.snapshot_file(commit, path);
        let what = || format!("linking {}", link.display());
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(io(what()))?;
        }
        let depth = 2 + path.matches('/').count();
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .chain(["blobs", etag])
            .collect();
        match std::fs::symlink_metadata(&link) {
            Ok(_) => std::fs::remove_file(&link).map_err(io(what()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(what())(e)),
        }
        std::os::unix::fs::symlink(&target, &link).map_err(io(what()))
    }

    /// Takes the download lock of one blob, waiting for another process (leo or Python)
    /// that holds it; released when the guard drops.
    pub fn lock(&self, etag: &str) -> Result<BlobLock, HubError> {
        let path = self.locks.join(format!("{etag}.lock"));
        let what = || format!("locking {}", path.display());
        std::fs::create_dir_all(&self.locks).map_err(io(what()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(what()))?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(BlobLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(what())(err));
            }
        }
    }
}

/// Holds a blob's lock; closing the file releases it.
pub(crate) struct BlobLock {
    _file: std::fs::File,
}

/// A full commit hash (40 hex digits).
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Files under a snapshot folder (or the file itself), as repository paths below `prefix`.
pub(crate) fn files_under(root: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(meta) = std::fs::metadata(root) else {
        return out;
    };
    if meta.is_file() {
        out.push(prefix.to_string());
        return out;
    }
    let mut stack = vec![(root.to_path_buf(), prefix.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_dir() => stack.push((entry.path(), child)),
                Ok(m) if m.is_file() => out.push(child),
                _ => {}
            }
        }
    }
    out.sort();
    out
}
