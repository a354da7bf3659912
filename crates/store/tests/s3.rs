//! The artifact store on a real S3-compatible server (s3s-fs on loopback): round trips through
//! single and multipart uploads, hash verification on read, and manifests written last.

use leo_store::ArtifactStore;
use leo_testkit::S3Server;

/// Opens a store on `server` under `prefix`, with the server's endpoint and credentials.
fn store(server: &S3Server, prefix: &str) -> ArtifactStore {
    ArtifactStore::open_with(&server.url(prefix), &server.env()).expect("open the S3 store")
}

fn sample_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(dir.join("sub/b.txt"), b"beta\n").unwrap();
    // Larger than the multipart threshold (32 MiB): goes up in 8 MiB parts.
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("sub/big.bin"), big).unwrap();
}

#[tokio::test]
async fn artifacts_round_trip_through_s3_including_multipart_uploads() {
    let server = S3Server::start().expect("s3s-fs");
    let store = store(&server, "runs/team-a");
    assert_eq!(store.url(), "s3://leo-test/runs/team-a");
    assert!(!store.is_local());
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let (digest, manifest) = store.put_path(src.path()).await.expect("put");
    assert_eq!(manifest.files.len(), 3);
    assert!(store.exists(&digest).await.unwrap());
    // Objects live under the prefix in the bucket.
    assert!(server.bucket_dir().join("runs/team-a/manifests").exists());

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    store
        .materialise(&digest, &dest)
        .await
        .expect("materialise");
    for f in ["a.txt", "sub/b.txt", "sub/big.bin"] {
        assert_eq!(
            std::fs::read(dest.join(f)).unwrap(),
            std::fs::read(src.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let shared = store
        .materialise_shared(&digest, &out.path().join("cache"))
        .await
        .expect("shared");
    assert_eq!(std::fs::read(shared.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        store.read_file(&digest, "sub/b.txt").await.unwrap(),
        b"beta\n"
    );
    // Putting the same tree again stores nothing new and yields the same digest.
    let (again, _) = store.put_path(src.path()).await.unwrap();
    assert_eq!(again, digest);
}

#[tokio::test]
async fn a_corrupted_blob_is_detected_on_read_and_never_used() {
    let server = S3Server::start().expect("s3s-fs");
    let store = store(&server, "p");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("weights.bin"), vec![7u8; 4096]).unwrap();
    let (digest, manifest) = store.put_path(src.path()).await.unwrap();
    let sha = &manifest.files[0].sha256;
    let blob = server
        .bucket_dir()
        .join(format!("p/blobs/sha256/{}/{sha}", &sha[..2]));
    assert!(blob.exists(), "expected the blob at {}", blob.display());
    std::fs::write(&blob, vec![8u8; 4096]).unwrap();

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    let err = store.materialise(&digest, &dest).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&digest), "{msg}");
    assert!(msg.contains("weights.bin"), "{msg}");
    assert!(msg.contains("corrupt"), "{msg}");
    assert!(
        !dest.join("weights.bin").exists(),
        "a corrupt file was put in place"
    );
}

#[tokio::test]
async fn an_artifact_is_visible_only_once_its_manifest_is_written() {
    let server = S3Server::start().expect("s3s-fs");
    let store = store(&server, "p");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let (digest, _) = store.put_path(src.path()).await.unwrap();
    // An upload that died after its blobs and before its manifest: remove the manifest.
    let hex = digest.trim_start_matches("sha256:");
    let manifest = server
        .bucket_dir()
        .join(format!("p/manifests/sha256/{hex}.json"));
    std::fs::remove_file(&manifest).unwrap();
    assert!(!store.exists(&digest).await.unwrap());
    assert!(store
        .materialise(&digest, &tempfile::tempdir().unwrap().path().join("x"))
        .await
        .is_err());
}

#[test]
fn urls_with_credentials_are_refused() {
    let err = ArtifactStore::open("s3://AKIA:secret@bucket/p").unwrap_err();
    assert!(!format!("{err:#}").contains("secret@"));
    assert!(ArtifactStore::open("s3:///p").is_err());
}

#[tokio::test]
async fn a_fifth_of_requests_failing_is_retried_through() {
    let server = S3Server::start().expect("s3s-fs");
    let proxy = leo_testkit::FaultyProxy::start(&server.endpoint(), 0.2, 7).expect("proxy");
    let store = ArtifactStore::open_with(&server.url("faulty"), &server.env_for(&proxy.endpoint()))
        .expect("open through the proxy");
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    for i in 0..20 {
        std::fs::write(
            src.path().join(format!("small-{i}.txt")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    let (digest, _) = store
        .put_path(src.path())
        .await
        .expect("put despite faults");
    let out = tempfile::tempdir().unwrap();
    store
        .materialise(&digest, &out.path().join("copy"))
        .await
        .expect("materialise despite faults");
    for f in ["a.txt", "sub/big.bin", "small-19.txt"] {
        assert_eq!(
            std::fs::read(out.path().join("copy").join(f)).unwrap(),
            std::fs::read(src.path().join(f)).unwrap()
        );
    }
    let c = proxy.counts();
    let injected = c.errors.load(std::sync::atomic::Ordering::Relaxed)
        + c.resets.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected >= 3, "only {injected} faults were injected: {c:?}");
    // The same content through the healthy endpoint has the same digest.
    let direct = store_on(&server, "direct");
    assert_eq!(direct.put_path(src.path()).await.unwrap().0, digest);
}

fn store_on(server: &S3Server, prefix: &str) -> ArtifactStore {
    store(server, prefix)
}
