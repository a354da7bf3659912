//! Manifests: the list of an artifact's files with their sizes and content hashes.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn new(mut files: Vec<FileEntry>) -> Manifest {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { files }
    }

    /// Canonical bytes: field order fixed by the struct, files sorted, no whitespace.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored manifest and checks that every entry is well-formed: a relative path
    /// that stays inside the artifact, and a SHA-256 in hex.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        for f in &manifest.files {
            let path = Path::new(&f.path);
            let inside = !f.path.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                bail!(
                    "manifest entry `{}` is not a relative path inside the artifact",
                    f.path
                );
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("manifest entry `{}` has no valid sha256", f.path);
            }
        }
        Ok(manifest)
    }

    /// The artifact id: `sha256:` + hex digest of the canonical manifest.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.to_json())))
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The digest and manifest a file or folder would have as an artifact, without storing it.
pub fn digest_path(path: &Path) -> Result<(String, Manifest)> {
    let mut entries = Vec::new();
    for (rel, abs) in list_files(path)? {
        let (sha256, size) = hash_file(&abs)?;
        entries.push(FileEntry {
            path: rel,
            size,
            sha256,
        });
    }
    let manifest = Manifest::new(entries);
    Ok((manifest.digest(), manifest))
}

/// What `stat` says about a file or folder: a hash over every file's relative path, size,
/// modification time and inode. Equal signatures mean the content is (almost certainly) the
/// same, so its digest need not be recomputed. `None` when a file changed within the last two
/// seconds: a write in the same timestamp tick could go unnoticed ("racy" files, as in git).
pub fn stat_signature(path: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut hasher = Sha256::new();
    for (rel, abs) in list_files(path)? {
        let m = std::fs::metadata(&abs).with_context(|| format!("reading {}", abs.display()))?;
        if m.mtime() >= now - 2 {
            return Ok(None);
        }
        hasher.update(format!(
            "{rel}\0{}\0{}.{}\0{}:{}\n",
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.dev(),
            m.ino()
        ));
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Files under `path` (or `path` itself) as (relative name, absolute path), sorted.
pub(crate) fn list_files(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        let name = path
            .file_name()
            .with_context(|| format!("{} has no file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        return Ok(vec![(name, path.to_path_buf())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let p = entry.path();
            let meta = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(path).unwrap_or(&p);
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, p));
            } else {
                bail!("{} is neither a file nor a folder", p.display());
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
