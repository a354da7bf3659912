//! leo-hub against a Hub on loopback ([`leo_testkit::FakeHub`]): real HTTP, the Hub's URL
//! layout, an LFS host beside it. Every setting is passed explicitly; the process environment
//! is neither read nor changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leo_hub::{CacheStatus, HfUri, Hub, HubError, HubSettings};
use leo_testkit::{FakeHub, HubHost, HubRepo, HubRequest};

const TOKEN: &str = "hf_secretSECRETsecret";

fn weights() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect()
}

fn model() -> HubRepo {
    HubRepo::new("models", "LeoLM/tiny-llama")
        .file("config.json", "{\"hidden_size\": 8}\n")
        .file("tokenizer/tokenizer.json", "{\"model\": {}}\n")
        .lfs_file("model.safetensors", weights())
}

fn dataset() -> HubRepo {
    HubRepo::new("datasets", "LeoLM/tiny-mmlu")
        .revision("v1.0")
        .file("README.md", "# tiny\n")
        .file("de/test.jsonl", "{\"q\": \"Was?\"}\n")
        .lfs_file("de/train.jsonl", "{\"q\": \"Wer?\"}\n".repeat(500))
        .file("en/test.jsonl", "{\"q\": \"What?\"}\n")
}

fn gated() -> HubRepo {
    HubRepo::new("models", "meta-llama/Llama-tiny")
        .gated(TOKEN)
        .file("config.json", "{}\n")
        .lfs_file("model.safetensors", b"weights of a gated model".to_vec())
}

/// Settings as `HF_ENDPOINT` and `HF_HUB_CACHE` would give them, with fast retries.
fn settings(hub: &FakeHub, cache: &Path) -> HubSettings {
    let (endpoint, cache) = (hub.endpoint(), cache.to_string_lossy().into_owned());
    let mut s = HubSettings::from_lookup(|name| match name {
        "HF_ENDPOINT" => Some(endpoint.clone()),
        "HF_HUB_CACHE" => Some(cache.clone()),
        "HOME" => Some("/nonexistent".into()),
        _ => None,
    });
    s.retry_backoff = Duration::from_millis(1);
    s.progress_bars = false;
    s
}

fn uri(s: &str) -> HfUri {
    HfUri::parse(s).expect("a valid URI")
}

fn file_requests(reqs: &[HubRequest]) -> Vec<&HubRequest> {
    reqs.iter()
        .filter(|r| r.host == HubHost::Lfs || r.path.contains("/resolve/"))
        .collect()
}

#[tokio::test]
async fn downloads_are_byte_identical_and_laid_out_as_huggingface_hub_lays_them_out() {
    let server = FakeHub::start(vec![model()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(settings(&server, cache.path())).unwrap();
    let repo = model();

    let r = hub.resolve(&uri("hf://LeoLM/tiny-llama")).await.unwrap();
    assert_eq!(r.commit, repo.commit);
    assert_eq!(
        r.files,
        [
            "config.json",
            "model.safetensors",
            "tokenizer/tokenizer.json"
        ]
    );
    let root = cache.path().join("models--LeoLM--tiny-llama");
    assert_eq!(r.local_path, root.join("snapshots").join(&repo.commit));
    assert_eq!(
        r.pinned_uri(),
        format!("hf://LeoLM/tiny-llama@{}", repo.commit)
    );
    for f in &repo.files {
        let in_snapshot = r.local_path.join(&f.path);
        assert_eq!(std::fs::read(&in_snapshot).unwrap(), f.bytes, "{}", f.path);
        // A relative symlink into blobs/<etag>, as huggingface_hub makes it.
        let etag = HubRepo::etag(f);
        let depth = 2 + f.path.matches('/').count();
        let expected: PathBuf = std::iter::repeat_n("..", depth)
            .chain(["blobs", etag.as_str()])
            .collect();
        assert_eq!(std::fs::read_link(&in_snapshot).unwrap(), expected);
        assert_eq!(
            std::fs::read(root.join("blobs").join(&etag)).unwrap(),
            f.bytes
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        repo.commit
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());
    // The LFS file came from the LFS host after a redirect.
    let reqs = server.requests();
    assert!(reqs
        .iter()
        .any(|q| q.host == HubHost::Lfs && q.method == "GET"));

    // A second resolve asks only for the revision; no file is requested again.
    server.clear_requests();
    let again = hub
        .resolve(&uri("hf://LeoLM/tiny-llama@main"))
        .await
        .unwrap();
    assert_eq!(again.local_path, r.local_path);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].path, "/api/models/LeoLM/tiny-llama/revision/main");
}

#[tokio::test]
async fn a_dataset_folder_and_a_file_at_a_revision() {
    let server = FakeHub::start(vec![dataset()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(settings(&server, cache.path())).unwrap();
    let repo = dataset();

    let folder = hub
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu/de"))
        .await
        .unwrap();
    assert_eq!(folder.files, ["de/test.jsonl", "de/train.jsonl"]);
    assert!(folder.local_path.ends_with(format!("{}/de", repo.commit)));
    let mut names: Vec<String> = std::fs::read_dir(&folder.local_path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["test.jsonl", "train.jsonl"]);
    // Nothing outside the folder was fetched.
    assert!(!server
        .requests()
        .iter()
        .any(|q| q.path.contains("en/test.jsonl") || q.path.contains("README")));

    let file = hub
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu@v1.0/en/test.jsonl"))
        .await
        .unwrap();
    assert!(file.local_path.is_file());
    assert_eq!(
        std::fs::read(&file.local_path).unwrap(),
        repo.files[3].bytes
    );
    let root = cache.path().join("datasets--LeoLM--tiny-mmlu");
    assert_eq!(
        std::fs::read_to_string(root.join("refs/v1.0")).unwrap(),
        repo.commit
    );
}

#[tokio::test]
async fn offline_works_from_the_cache_and_says_clearly_when_a_uri_is_not_cached() {
    let server = FakeHub::start(vec![dataset()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let online = Hub::new(settings(&server, cache.path())).unwrap();
    let got = online
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu/de"))
        .await
        .unwrap();

    server.clear_requests();
    let mut s = settings(&server, cache.path());
    s.offline = true;
    let offline = Hub::new(s).unwrap();
    let r = offline
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu/de"))
        .await
        .unwrap();
    assert_eq!(
        (r.commit.as_str(), &r.local_path),
        (got.commit.as_str(), &got.local_path)
    );
    assert_eq!(r.files, got.files);
    let e = offline
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu/en"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hf://datasets/LeoLM/tiny-mmlu/en is not cached")
            && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    assert!(server.requests().is_empty(), "offline sent requests");
}

#[tokio::test]
async fn a_cut_transfer_resumes_with_a_range_request_within_a_call_and_across_calls() {
    let server = FakeHub::start(vec![model()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bytes = weights();

    // Within one call: cut after 100,000 bytes, retried from there.
    server.cut_next_transfer("model.safetensors", 100_000);
    let hub = Hub::new(settings(&server, cache.path())).unwrap();
    let r = hub
        .resolve(&uri("hf://LeoLM/tiny-llama/model.safetensors"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r.local_path).unwrap(), bytes);
    let lfs: Vec<Option<String>> = server
        .requests()
        .into_iter()
        .filter(|q| q.host == HubHost::Lfs)
        .map(|q| q.range)
        .collect();
    assert_eq!(lfs, [None, Some("bytes=100000-".to_string())]);

    // Across calls: no retries, so the first call fails and leaves the partial blob; the next
    // call (a new Hub, as a new process would make) continues it.
    let cache = tempfile::tempdir().unwrap();
    server.clear_requests();
    server.cut_next_transfer("model.safetensors", 300_000);
    let mut s = settings(&server, cache.path());
    s.retries = 0;
    let e = Hub::new(s)
        .unwrap()
        .resolve(&uri("hf://LeoLM/tiny-llama/model.safetensors"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let etag = HubRepo::etag(&model().files[2]);
    let partial = cache
        .path()
        .join(format!("models--LeoLM--tiny-llama/blobs/{etag}.incomplete"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 300_000);
    let r = Hub::new(settings(&server, cache.path()))
        .unwrap()
        .resolve(&uri("hf://LeoLM/tiny-llama/model.safetensors"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r.local_path).unwrap(), bytes);
    assert!(!partial.exists());
    let lfs: Vec<Option<String>> = server
        .requests()
        .into_iter()
        .filter(|q| q.host == HubHost::Lfs)
        .map(|q| q.range)
        .collect();
    assert_eq!(lfs, [None, Some("bytes=300000-".to_string())]);
}

#[tokio::test]
async fn a_gated_repository_says_what_to_do_and_the_token_goes_to_the_endpoint_only() {
    let server = FakeHub::start(vec![gated()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let gated_uri = uri("hf://meta-llama/Llama-tiny");

    let anonymous = Hub::new(settings(&server, cache.path())).unwrap();
    let e = anonymous.resolve(&gated_uri).await.unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Gated {
                token_sent: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "hf://meta-llama/Llama-tiny is a gated repository: accept its conditions at \
             {}/meta-llama/Llama-tiny (logged in), then set HF_TOKEN to a read token of that \
             account (no token was sent: HF_TOKEN is not set)",
            server.endpoint()
        )
    );

    let mut s = settings(&server, cache.path());
    s.token = Some("hf_notTheRightOne".into());
    let e = Hub::new(s).unwrap().resolve(&gated_uri).await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        text.contains("a token was sent, but its account has no access"),
        "{text}"
    );
    assert!(!text.contains("hf_notTheRightOne"), "{text}");

    server.clear_requests();
    let mut s = settings(&server, cache.path());
    s.token = Some(TOKEN.into());
    let r = Hub::new(s).unwrap().resolve(&gated_uri).await.unwrap();
    assert_eq!(
        std::fs::read(r.local_path.join("model.safetensors")).unwrap(),
        b"weights of a gated model"
    );
    let reqs = server.requests();
    let bearer = format!("Bearer {TOKEN}");
    assert!(reqs
        .iter()
        .filter(|q| q.host == HubHost::Endpoint)
        .all(|q| q.authorization.as_deref() == Some(bearer.as_str())));
    let to_lfs: Vec<_> = reqs.iter().filter(|q| q.host == HubHost::Lfs).collect();
    assert_eq!(to_lfs.len(), 1);
    assert_eq!(
        to_lfs[0].authorization, None,
        "the token went to the LFS host"
    );
}

#[tokio::test]
async fn missing_repositories_revisions_and_entries_are_named() {
    let server = FakeHub::start(vec![dataset()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(settings(&server, cache.path())).unwrap();

    let e = hub
        .resolve(&uri("hf://datasets/LeoLM/nope"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "hf://datasets/LeoLM/nope: no such repository, or it is private and no token was sent \
         (HF_TOKEN is not set)"
    );
    let e = hub
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu@v2/de"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no revision `v2`"), "{e}");
    let e = hub
        .resolve(&uri("hf://datasets/LeoLM/tiny-mmlu/de/tset.jsonl"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`de/tset.jsonl` is no file or folder")
            && e.contains("close names: de/test.jsonl"),
        "{e}"
    );
    assert!(file_requests(&server.requests()).is_empty());
}

#[tokio::test]
async fn status_downloads_nothing_and_an_unreachable_hub_falls_back_to_the_cache() {
    let server = FakeHub::start(vec![dataset()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(settings(&server, cache.path())).unwrap();
    let de = uri("hf://datasets/LeoLM/tiny-mmlu/de");

    match hub.status(&de).await.unwrap() {
        CacheStatus::Missing { missing, total, .. } => assert_eq!((missing, total), (2, 2)),
        other => panic!("{other:?}"),
    }
    assert!(file_requests(&server.requests()).is_empty());
    hub.resolve(&de).await.unwrap();
    assert!(matches!(
        hub.status(&de).await.unwrap(),
        CacheStatus::Complete(_)
    ));

    // Nobody listens at this endpoint: the cache answers, or the error says why it cannot.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut s = settings(&server, cache.path());
    s.endpoint = format!("http://127.0.0.1:{port}");
    let unreachable = Hub::new(s).unwrap();
    assert!(matches!(
        unreachable.status(&de).await.unwrap(),
        CacheStatus::Complete(_)
    ));
    let e = unreachable
        .status(&uri("hf://datasets/LeoLM/tiny-mmlu/en"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not cached") && e.contains("could not be reached"),
        "{e}"
    );
}

#[tokio::test]
async fn a_partial_file_that_is_no_prefix_of_the_blob_is_downloaded_again() {
    let server = FakeHub::start(vec![model()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let etag = HubRepo::etag(&model().files[2]);
    let blobs = cache.path().join("models--LeoLM--tiny-llama/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // As long as a prefix, but other bytes; and one as long as the whole file.
    for len in [1000, weights().len()] {
        std::fs::write(blobs.join(format!("{etag}.incomplete")), vec![0u8; len]).unwrap();
        let r = Hub::new(settings(&server, cache.path()))
            .unwrap()
            .resolve(&uri("hf://LeoLM/tiny-llama/model.safetensors"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&r.local_path).unwrap(), weights());
        std::fs::remove_dir_all(cache.path()).unwrap();
        std::fs::create_dir_all(&blobs).unwrap();
    }
}
