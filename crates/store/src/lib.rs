//! Artifacts: immutable sets of files, identified by the digest of their manifest.
//!
//! Layout in the object store:
//! - `blobs/sha256/ab/abcdef…` — file contents, shared by every artifact that holds them;
//! - `manifests/sha256/<hex>.json` — one per artifact, written after all its blobs.
//!
//! An artifact exists once its manifest exists; the engine additionally records it in the
//! state database in the same transaction that marks the producing stage done.

mod maintenance;
mod manifest;
mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use tokio::io::AsyncWriteExt;

pub use maintenance::{Garbage, VerifyReport};
pub use manifest::{digest_path, stat_signature, FileEntry, Manifest};

/// Files larger than this are uploaded in parts instead of being read into memory whole.
const MULTIPART_THRESHOLD: u64 = 32 << 20;
const PART_SIZE: usize = 8 << 20;
/// Large blobs download as ranges of this size, this many at a time.
const RANGE_SIZE: usize = 16 << 20;
const RANGES_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The folder of a local store: its blobs can be hard-linked instead of copied.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("url", &self.url)
            .finish()
    }
}

impl ArtifactStore {
    /// Opens a store: a local path or `file://` URL (created when missing), or
    /// `s3://BUCKET[/PREFIX]` on any S3-compatible service. S3 settings come from the usual AWS
    /// environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` (MinIO, Ceph, R2, …), `AWS_ALLOW_HTTP=true` for a plain
    /// HTTP endpoint, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` (path style by default); on AWS also
    /// instance, container and web-identity credentials. Credentials are never part of the URL,
    /// so the URL recorded with runs holds no secret.
    pub fn open(location: &str) -> Result<ArtifactStore> {
        ArtifactStore::open_with(location, &[])
    }

    /// Like [`open`](Self::open), with S3 settings (`AWS_*` names, as in the environment) that
    /// take precedence over the environment's.
    pub fn open_with(location: &str, settings: &[(&str, String)]) -> Result<ArtifactStore> {
        if let Some(store) = remote::open(location, settings)? {
            return Ok(store);
        }
        let path = if let Some(rest) = location.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if location.contains("://") {
            bail!("artifact store `{location}`: not a local folder, file://, s3://, gs:// or az:// URL")
        } else {
            PathBuf::from(location)
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating artifact store folder {}", path.display()))?;
        let path = std::fs::canonicalize(&path)
            .with_context(|| format!("resolving artifact store folder {}", path.display()))?;
        let fs = LocalFileSystem::new_with_prefix(&path)
            .with_context(|| format!("opening artifact store {}", path.display()))?;
        Ok(ArtifactStore {
            inner: Arc::new(fs),
            url: format!("file://{}", path.display()),
            local_root: Some(path),
        })
    }

    /// Whether the store is a local folder (hard links work) rather than a remote service.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The store's canonical URL (recorded with each run).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores a file or a folder as an artifact and returns its digest and manifest.
    /// Blobs go first, the manifest last: a crash in between leaves no visible artifact.
    pub async fn put_path(&self, path: &Path) -> Result<(String, Manifest)> {
        self.put_path_inner(path, None).await
    }

    /// Like [`put_path`](Self::put_path) for files nobody will change again (a finished
    /// stage's outputs and log): a local store on the same file system adopts them as blobs
    /// through hard links instead of copying. Only regular files inside `owned` (the attempt's
    /// own folder) are adopted; anything reached through a symlink is copied.
    pub async fn put_path_final(&self, path: &Path, owned: &Path) -> Result<(String, Manifest)> {
        let owned = std::fs::canonicalize(owned)
            .with_context(|| format!("resolving {}", owned.display()))?;
        self.put_path_inner(path, Some(&owned)).await
    }

    async fn put_path_inner(
        &self,
        path: &Path,
        adopt: Option<&Path>,
    ) -> Result<(String, Manifest)> {
        let files = manifest::list_files(path)?;
        let mut entries = Vec::with_capacity(files.len());
        for (rel, abs) in files {
            let (sha256, size) = manifest::hash_file(&abs)?;
            self.put_blob(&abs, &sha256, size, adopt).await?;
            entries.push(FileEntry {
                path: rel,
                size,
                sha256,
            });
        }
        let manifest = Manifest::new(entries);
        let digest = manifest.digest();
        let location = manifest_path(&digest)?;
        if !self.exists_at(&location).await? {
            self.inner
                .put(&location, PutPayload::from(manifest.to_json()))
                .await
                .with_context(|| format!("writing manifest {digest} to {}", self.url))?;
        }
        Ok((digest, manifest))
    }

    async fn put_blob(
        &self,
        file: &Path,
        sha256: &str,
        size: u64,
        adopt: Option<&Path>,
    ) -> Result<()> {
        let location = blob_path(sha256);
        if self.exists_at(&location).await? {
            return Ok(());
        }
        let adoptable = adopt.is_some_and(|owned| {
            std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file())
                && std::fs::canonicalize(file)
                    .is_ok_and(|real| real == file || real.starts_with(owned))
                && file.starts_with(owned)
        });
        if let (true, Some(root)) = (adoptable, &self.local_root) {
            let blob = root.join(location.as_ref());
            if let Some(parent) = blob.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match std::fs::hard_link(file, &blob) {
                Ok(()) => {
                    self.seal_local_blob(sha256);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
                // Another file system: copy below.
                Err(_) => {}
            }
        }
        if size <= MULTIPART_THRESHOLD {
            let bytes = tokio::fs::read(file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            self.inner
                .put(&location, PutPayload::from(bytes))
                .await
                .with_context(|| format!("uploading {} to {}", file.display(), self.url))?;
            self.seal_local_blob(sha256);
            return Ok(());
        }
        let upload = self
            .inner
            .put_multipart(&location)
            .await
            .with_context(|| format!("starting upload of {}", file.display()))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .with_context(|| format!("finishing upload of {}", file.display()))?;
        self.seal_local_blob(sha256);
        Ok(())
    }

    /// Blobs are immutable: in a local store they are made read-only, which also protects the
    /// hard links handed to stages (for users other than root).
    fn seal_local_blob(&self, sha256: &str) {
        if let Some(root) = &self.local_root {
            use std::os::unix::fs::PermissionsExt;
            let path = root.join(blob_path(sha256).as_ref());
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
        }
    }

    /// The artifact's files under `cache/<hex>/`, materialised once and shared by every
    /// consumer: hard links into a local store (no copy), downloads otherwise. Consumers must
    /// treat the folder as read-only. Safe against concurrent callers: the folder is built
    /// under a temporary name and renamed into place.
    pub async fn materialise_shared(&self, digest: &str, cache: &Path) -> Result<PathBuf> {
        let hex = digest_hex(digest)?;
        let dest = cache.join(hex);
        if dest.exists() {
            return Ok(dest);
        }
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        // Unique per call: concurrent attempts of this process may build the same artifact.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = cache.join(format!(".{hex}.{}.{n}.partial", std::process::id()));
        match &self.local_root {
            Some(root) => {
                let manifest = self.manifest(digest).await?;
                std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                for entry in &manifest.files {
                    let target = tmp.join(&entry.path);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    let blob = root.join(blob_path(&entry.sha256).as_ref());
                    if std::fs::hard_link(&blob, &target).is_err() {
                        // Another file system: copy, and check what was copied.
                        std::fs::copy(&blob, &target).with_context(|| {
                            format!("copying {} to {}", blob.display(), target.display())
                        })?;
                        let (sha, _) = manifest::hash_file(&target)?;
                        if sha != entry.sha256 {
                            bail!(
                                "blob {} in {} is corrupt (content hashes to {sha})",
                                entry.sha256,
                                self.url
                            );
                        }
                    }
                }
            }
            None => {
                self.materialise(digest, &tmp).await?;
            }
        }
        set_tree_writable(&tmp, false);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            set_tree_writable(&tmp, true);
            let _ = std::fs::remove_dir_all(&tmp);
            // A concurrent caller won the race: its copy is identical.
            if !dest.exists() {
                return Err(e).with_context(|| format!("moving {} into place", dest.display()));
            }
        }
        Ok(dest)
    }

    async fn exists_at(&self, location: &StorePath) -> Result<bool> {
        match self.inner.head(location).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("checking {location} in {}", self.url)),
        }
    }

    /// Stores `record` as `records/sha256/<hex>/<id>.leo-artifact.json`: a self-describing
    /// account of how the artifact was made, kept beside it so lineage survives without the
    /// state database. One artifact may have several (the same content made twice).
    pub async fn put_record(&self, digest: &str, id: &str, record: &[u8]) -> Result<()> {
        let hex = digest_hex(digest)?;
        let id: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let location = StorePath::from(format!("records/sha256/{hex}/{id}.leo-artifact.json"));
        self.inner
            .put(&location, PutPayload::from(record.to_vec()))
            .await
            .with_context(|| format!("writing the record of {digest} to {}", self.url))?;
        Ok(())
    }

    /// The `.leo-artifact.json` records of an artifact, oldest name first.
    pub async fn records(&self, digest: &str) -> Result<Vec<Vec<u8>>> {
        let hex = digest_hex(digest)?;
        let prefix = StorePath::from(format!("records/sha256/{hex}"));
        let mut names = Vec::new();
        let mut list = self.inner.list(Some(&prefix));
        while let Some(meta) = list.next().await {
            names.push(
                meta.with_context(|| format!("listing records in {}", self.url))?
                    .location,
            );
        }
        names.sort();
        let mut out = Vec::new();
        for n in names {
            out.push(self.inner.get(&n).await?.bytes().await?.to_vec());
        }
        Ok(out)
    }

    /// Whether the artifact's manifest is in the store.
    pub async fn exists(&self, digest: &str) -> Result<bool> {
        self.exists_at(&manifest_path(digest)?).await
    }

    pub async fn manifest(&self, digest: &str) -> Result<Manifest> {
        let bytes = self
            .inner
            .get(&manifest_path(digest)?)
            .await
            .with_context(|| format!("artifact {digest} is not in {}", self.url))?
            .bytes()
            .await?;
        let manifest =
            Manifest::from_json(&bytes).with_context(|| format!("manifest of {digest}"))?;
        if manifest.digest() != digest {
            bail!(
                "manifest of {digest} in {} is corrupt (its digest is {})",
                self.url,
                manifest.digest()
            );
        }
        Ok(manifest)
    }

    /// Writes the artifact's files under `dest` (created), verifying every file's hash.
    pub async fn materialise(&self, digest: &str, dest: &Path) -> Result<Manifest> {
        let manifest = self.manifest(digest).await?;
        tokio::fs::create_dir_all(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        for entry in &manifest.files {
            let target = dest.join(&entry.path);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            self.fetch_blob(&entry.sha256, entry.size, &target)
                .await
                .with_context(|| format!("artifact {digest}, file {}", entry.path))?;
        }
        Ok(manifest)
    }

    /// Reads one file of an artifact into memory (logs, small reports).
    pub async fn read_file(&self, digest: &str, path: &str) -> Result<Vec<u8>> {
        let manifest = self.manifest(digest).await?;
        let entry = manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .with_context(|| format!("artifact {digest} has no file {path}"))?;
        let bytes = self
            .inner
            .get(&blob_path(&entry.sha256))
            .await?
            .bytes()
            .await?;
        Ok(bytes.to_vec())
    }

    /// Downloads a blob to `target`, checking its hash on the way: small blobs in one request,
    /// large ones as ranges fetched [`RANGES_IN_FLIGHT`] at a time and written in order (memory
    /// stays at that many ranges, whatever the size). The file appears under its name only once
    /// its hash is right.
    async fn fetch_blob(&self, sha256: &str, size: u64, target: &Path) -> Result<()> {
        let location = blob_path(sha256);
        let tmp = target.with_extension("leo-partial");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let written: Result<()> = async {
            if size <= MULTIPART_THRESHOLD {
                let result = self
                    .inner
                    .get(&location)
                    .await
                    .with_context(|| format!("blob {sha256} is missing from {}", self.url))?;
                let mut stream = result.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    sha2::Digest::update(&mut hasher, &chunk);
                    file.write_all(&chunk).await?;
                }
            } else {
                let ranges = (0..size)
                    .step_by(RANGE_SIZE)
                    .map(|start| start..(start + RANGE_SIZE as u64).min(size));
                let mut parts = futures::stream::iter(ranges.map(|r| {
                    let location = location.clone();
                    async move { self.inner.get_range(&location, r).await }
                }))
                .buffered(RANGES_IN_FLIGHT);
                while let Some(part) = parts.next().await {
                    let part =
                        part.with_context(|| format!("reading blob {sha256} from {}", self.url))?;
                    sha2::Digest::update(&mut hasher, &part);
                    file.write_all(&part).await?;
                }
            }
            file.flush().await?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let got = hex::encode(sha2::Digest::finalize(hasher));
        if got != sha256 {
            let _ = tokio::fs::remove_file(&tmp).await;
            bail!(
                "blob {sha256} in {} is corrupt (content hashes to {got})",
                self.url
            );
        }
        tokio::fs::rename(&tmp, target)
            .await
            .with_context(|| format!("moving {} into place", target.display()))?;
        Ok(())
    }
}

fn blob_path(sha256: &str) -> StorePath {
    StorePath::from(format!(
        "blobs/sha256/{}/{}",
        &sha256[..2.min(sha256.len())],
        sha256
    ))
}

/// Folders of a shared materialisation are read-only (0555) so that a stage cannot rename or
/// delete what other stages read; [`remove_shared`] undoes that to clean up.
fn set_tree_writable(dir: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if writable { 0o755 } else { 0o555 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if writable {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        if !writable {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
        }
    }
}

/// Removes a folder of shared materialisations (see [`ArtifactStore::materialise_shared`]).
pub fn remove_shared(cache: &Path) -> std::io::Result<()> {
    if !cache.exists() {
        return Ok(());
    }
    set_tree_writable(cache, true);
    std::fs::remove_dir_all(cache)
}

fn digest_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("`{digest}` is not an artifact digest (sha256:<64 hex digits>)"))
}

fn manifest_path(digest: &str) -> Result<StorePath> {
    Ok(StorePath::from(format!(
        "manifests/sha256/{}.json",
        digest_hex(digest)?
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_materialise_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(tmp.path().join("store").to_str().unwrap()).unwrap();
        let src = tmp.path().join("out");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"hallo").unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![7u8; 1000]).unwrap();
        let (digest, manifest) = store.put_path(&src).await.unwrap();
        assert_eq!(manifest.files.len(), 2);
        assert_eq!(manifest.files[0].path, "a.txt");
        assert_eq!(manifest.files[1].path, "sub/b.bin");
        assert!(store.exists(&digest).await.unwrap());
        // Same content, same digest, independent of where it came from.
        let (digest2, _) = digest_path(&src).unwrap();
        assert_eq!(digest, digest2);
        let dest = tmp.path().join("in");
        store.materialise(&digest, &dest).await.unwrap();
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"hallo");
        assert_eq!(
            std::fs::read(dest.join("sub/b.bin")).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(store.read_file(&digest, "a.txt").await.unwrap(), b"hallo");
        // Shared materialisation: hard links, built once, read-only blobs.
        let cache = tmp.path().join("cache");
        let shared = store.materialise_shared(&digest, &cache).await.unwrap();
        assert_eq!(
            shared,
            store.materialise_shared(&digest, &cache).await.unwrap()
        );
        assert_eq!(
            std::fs::read(shared.join("sub/b.bin")).unwrap(),
            vec![7u8; 1000]
        );
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(shared.join("a.txt")).unwrap();
        assert!(meta.nlink() >= 2, "hard link into the store");
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let dir_mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o555);
        remove_shared(&cache).unwrap();
        assert!(!cache.exists());
    }

    #[tokio::test]
    async fn symlinked_files_are_copied_not_adopted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(tmp.path().join("store").to_str().unwrap()).unwrap();
        let user_file = tmp.path().join("user.txt");
        std::fs::write(&user_file, b"mine").unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(work.join("out")).unwrap();
        std::os::unix::fs::symlink(&user_file, work.join("out/link.txt")).unwrap();
        std::fs::write(work.join("out/own.txt"), b"own").unwrap();
        let (digest, _) = store
            .put_path_final(&work.join("out"), &work)
            .await
            .unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // The user's file is neither linked into the store nor made read-only.
        assert_eq!(std::fs::metadata(&user_file).unwrap().nlink(), 1);
        assert_ne!(
            std::fs::metadata(&user_file).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // The attempt's own file was adopted.
        assert_eq!(
            std::fs::metadata(work.join("out/own.txt")).unwrap().nlink(),
            2
        );
        let dest = tmp.path().join("in");
        store.materialise(&digest, &dest).await.unwrap();
        assert_eq!(std::fs::read(dest.join("link.txt")).unwrap(), b"mine");
    }

    #[tokio::test]
    async fn corrupt_blob_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = ArtifactStore::open(root.to_str().unwrap()).unwrap();
        let f = tmp.path().join("x.txt");
        std::fs::write(&f, b"data").unwrap();
        let (digest, manifest) = store.put_path(&f).await.unwrap();
        let sha = &manifest.files[0].sha256;
        std::fs::write(
            root.join(format!("blobs/sha256/{}/{}", &sha[..2], sha)),
            b"evil",
        )
        .unwrap();
        let err = store
            .materialise(&digest, &tmp.path().join("in"))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }

    #[test]
    fn bad_digests_are_rejected() {
        assert!(manifest_path("sha256:xyz").is_err());
        assert!(manifest_path("../../etc/passwd").is_err());
    }

    #[test]
    fn manifests_with_escaping_paths_are_rejected() {
        let sha = "a".repeat(64);
        for path in ["../x", "/etc/passwd", "a/../../b", ""] {
            let json = format!(r#"{{"files":[{{"path":"{path}","size":1,"sha256":"{sha}"}}]}}"#);
            assert!(Manifest::from_json(json.as_bytes()).is_err(), "{path}");
        }
        let ok = format!(r#"{{"files":[{{"path":"a/b.txt","size":1,"sha256":"{sha}"}}]}}"#);
        assert!(Manifest::from_json(ok.as_bytes()).is_ok());
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_shared_materialisation_of_one_artifact_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(tmp.path().join("store").to_str().unwrap()).unwrap();
        let src = tmp.path().join("out");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..20 {
            std::fs::write(src.join(format!("f{i}")), format!("{i}")).unwrap();
        }
        let (digest, _) = store.put_path(&src).await.unwrap();
        let cache = tmp.path().join("cache");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (store, digest, cache) = (store.clone(), digest.clone(), cache.clone());
                tokio::spawn(async move { store.materialise_shared(&digest, &cache).await })
            })
            .collect();
        for t in tasks {
            let dir = t.await.unwrap().unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("f7")).unwrap(), "7");
        }
        // No half-built folders are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
