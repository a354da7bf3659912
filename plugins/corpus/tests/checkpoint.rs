//! A corpus stage killed after a checkpoint continues from it: documents already read are
//! skipped, and the output equals an uninterrupted run's.

mod support;

use leo_plugin_corpus::config::Config;
use support::{corpus, kept_docs, try_run, Recorder};

fn config() -> Config {
    let mut c = Config::default();
    c.filters.language.enabled = false;
    c.checkpoint_docs = 2000;
    c
}

#[test]
fn killed_stage_resumes_from_its_checkpoint_with_identical_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let inputs = || vec![("corpus".to_string(), corpus())];

    let whole = Recorder::default();
    let full = try_run(
        &config(),
        inputs(),
        &tmp.path().join("full"),
        None,
        None,
        &whole,
    )
    .expect("run");
    assert!(
        whole.checkpoints.lock().unwrap().len() >= 3,
        "checkpoints every 2000 documents or so"
    );

    // Killed when reporting its third checkpoint; the second is the latest the engine has.
    let killed = Recorder {
        fail_at_checkpoint: Some(3),
        ..Default::default()
    };
    let err = try_run(
        &config(),
        inputs(),
        &tmp.path().join("a1"),
        None,
        None,
        &killed,
    )
    .unwrap_err();
    assert!(err.to_string().contains("killed"), "{err:#}");
    let (latest, step) = killed.checkpoints.lock().unwrap()[1].clone();

    let again = Recorder::default();
    let resumed = try_run(
        &config(),
        inputs(),
        &tmp.path().join("a2"),
        None,
        Some(&latest),
        &again,
    )
    .expect("resume");
    let logs = again.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains(&format!("continuing after {step} input batches")),
        "{logs}"
    );
    let first_progress = again.progress.lock().unwrap()[0];
    assert!(
        first_progress > 4000,
        "the resumed attempt starts at the checkpoint's count, not 0: {first_progress}"
    );

    assert_eq!(resumed.documents_in, full.documents_in);
    assert_eq!(resumed.documents_out, full.documents_out);
    assert_eq!(resumed.exact_dedup.documents, full.exact_dedup.documents);
    assert_eq!(
        resumed.minhash_dedup.documents,
        full.minhash_dedup.documents
    );
    for ((name, a), (_, b)) in resumed.filters.iter().zip(&full.filters) {
        assert_eq!(a.documents, b.documents, "{name}");
        assert_eq!(a.reasons, b.reasons, "{name}");
    }
    assert_eq!(
        kept_docs(&tmp.path().join("a2/documents")),
        kept_docs(&tmp.path().join("full/documents"))
    );

    // Other params: the checkpoint is not used.
    let mut other = config();
    other.filters.gopher_quality.min_doc_words = Some(10);
    let fresh = Recorder::default();
    try_run(
        &other,
        inputs(),
        &tmp.path().join("b"),
        None,
        Some(&latest),
        &fresh,
    )
    .expect("run");
    assert!(fresh
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("other params: starting over")));
    assert!(
        fresh.progress.lock().unwrap()[0] < first_progress,
        "started over from 0"
    );
}
