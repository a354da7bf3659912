//! Tests of the state API, each run twice: against a real SQLite file and against a real
//! PostgreSQL server (a throwaway cluster on loopback).
use super::*;

/// For each test function `name(State)`, a module `name` with the tests `sqlite` and `postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("s.db");
                let s = super::State::open(path.to_str().unwrap()).await.unwrap();
                super::$name(s).await;
            }

            #[tokio::test]
            async fn postgres() {
                let pg = leo_testkit::Postgres::start().expect("a PostgreSQL cluster for the test");
                let s = super::State::open(&pg.database().unwrap()).await.unwrap();
                assert!(s.is_shared());
                super::$name(s.clone()).await;
                s.close().await;
            }
        }
    )*};
}

on_both_backends!(
    leases_fence_out_a_holder_whose_lease_was_taken_over,
    stage_lifecycle_and_cache_lookup,
    running_attempts_of_a_dead_engine_become_lost,
    latest_checkpoint_is_the_highest_step,
    external_digests_are_reused_only_for_the_same_signature,
    metrics_of_a_run_and_their_latest_values
);

/// Run `r1` with one pending stage and its first attempt started; returns the attempt id.
async fn started_attempt(s: &State, stage: &str) -> String {
    s.create_run(&run("r1")).await.unwrap();
    s.upsert_stage(&StageUpdate {
        run_id: "r1",
        stage,
        status: StageStatus::Pending,
        fingerprint: None,
        fingerprint_json: None,
        cached_from_run: None,
        error: None,
    })
    .await
    .unwrap();
    s.start_attempt(&NewAttempt {
        run_id: "r1",
        stage,
        number: 1,
        host: "h",
        inputs: &[],
        resumed_from: None,
        fingerprint: None,
    })
    .await
    .unwrap()
}

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        workflow_name: "w".into(),
        workflow_path: "w.toml".into(),
        spec_json: "{}".into(),
        store_url: "file:///tmp/x".into(),
        status: RunStatus::Running,
        created_at: now_ms(),
        updated_at: now_ms(),
        engine_host: Some("h".into()),
        engine_pid: Some(1),
        engine_heartbeat: None,
        provenance: None,
    }
}

async fn stage_lifecycle_and_cache_lookup(s: State) {
    s.create_run(&run("r1")).await.unwrap();
    s.upsert_stage(&StageUpdate {
        run_id: "r1",
        stage: "a",
        status: StageStatus::Pending,
        fingerprint: Some("fp1"),
        fingerprint_json: Some("{}"),
        cached_from_run: None,
        error: None,
    })
    .await
    .unwrap();
    let inputs = vec![(
        "raw".to_string(),
        "sha256:ext".to_string(),
        Some("file:///x".to_string()),
    )];
    let id = s
        .start_attempt(&NewAttempt {
            run_id: "r1",
            stage: "a",
            number: 1,
            host: "h",
            inputs: &inputs,
            resumed_from: None,
            fingerprint: None,
        })
        .await
        .unwrap();
    assert_eq!(s.find_cached("fp1").await.unwrap(), None);
    let outputs = vec![OutputArtifact {
        name: "out".into(),
        digest: "sha256:o".into(),
        size: 3,
        files: 1,
    }];
    s.complete_stage(&StageCompletion {
        run_id: "r1",
        stage: "a",
        status: StageStatus::Succeeded,
        attempt_id: Some(&id),
        cached_from_run: None,
        outputs: &outputs,
        fingerprint: None,
        lease: None,
    })
    .await
    .unwrap();
    s.finish_attempt(&AttemptFinish {
        attempt_id: &id,
        status: AttemptStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        log: None,
        finished_at: now_ms(),
        completion: None,
    })
    .await
    .unwrap();
    let (run_id, outs) = s.find_cached("fp1").await.unwrap().unwrap();
    assert_eq!(run_id, "r1");
    assert_eq!(outs, vec![("out".to_string(), "sha256:o".to_string())]);
    let (producer, relation, name) = s.producer("sha256:o").await.unwrap().unwrap();
    assert_eq!(
        (producer.stage.as_str(), relation.as_str(), name.as_str()),
        ("a", "output", "out")
    );
    let ins = s.attempt_inputs(&id).await.unwrap();
    assert_eq!(
        ins,
        vec![("input".into(), "raw".into(), "sha256:ext".into())]
    );
    assert_eq!(s.stages("r1").await.unwrap()[0].attempts, 1);
}

async fn running_attempts_of_a_dead_engine_become_lost(s: State) {
    started_attempt(&s, "a").await;
    assert_eq!(s.mark_lost("r1").await.unwrap(), 1);
    assert_eq!(s.stages("r1").await.unwrap()[0].status, StageStatus::Lost);
    assert_eq!(
        s.attempts("r1").await.unwrap()[0].status,
        AttemptStatus::Lost
    );
}

async fn latest_checkpoint_is_the_highest_step(s: State) {
    let id = started_attempt(&s, "t").await;
    for step in [5u64, 10] {
        s.record_checkpoint(&CheckpointRecord {
            run_id: "r1".into(),
            stage: "t".into(),
            attempt_id: id.clone(),
            step,
            digest: format!("sha256:c{step}"),
            size: 1,
            files: 1,
        })
        .await
        .unwrap();
    }
    assert_eq!(
        s.latest_checkpoint("r1", "t").await.unwrap(),
        Some(("sha256:c10".into(), 10))
    );
}

async fn external_digests_are_reused_only_for_the_same_signature(s: State) {
    s.record_external_digest("file:///x", "sig1", "sha256:aa")
        .await
        .unwrap();
    assert_eq!(
        s.external_digest("file:///x", "sig1")
            .await
            .unwrap()
            .as_deref(),
        Some("sha256:aa")
    );
    assert_eq!(s.external_digest("file:///x", "sig2").await.unwrap(), None);
    s.record_external_digest("file:///x", "sig2", "sha256:bb")
        .await
        .unwrap();
    assert_eq!(s.external_digest("file:///x", "sig1").await.unwrap(), None);
    assert_eq!(
        s.external_digest("file:///x", "sig2")
            .await
            .unwrap()
            .as_deref(),
        Some("sha256:bb")
    );
}

#[test]
fn passwords_never_show_in_state_locations() {
    assert_eq!(
        redact_url("postgres://leo:s3cret@db.example:5432/runs?sslmode=require"),
        "postgres://leo:***@db.example:5432/runs?sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://leo@db/runs?password=s3cret&application_name=x"),
        "postgres://leo@db/runs?password=***&application_name=x"
    );
    assert_eq!(redact_url("/tmp/state.db"), "/tmp/state.db");
}

#[tokio::test]
async fn unknown_schemes_are_refused_without_echoing_secrets() {
    let err = State::open("mysql://u:pw@h/db").await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("postgres://"), "{msg}");
    assert!(!msg.contains("pw@"), "{msg}");
}

async fn leases_fence_out_a_holder_whose_lease_was_taken_over(s: State) {
    let id = started_attempt(&s, "train").await;
    let later = now_ms() + 60_000;
    let first = s
        .acquire_lease("fp1", "engine-a", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.token, 1);
    // Live and held by another: refused; renewing is the holder's alone.
    assert!(s
        .acquire_lease("fp1", "engine-b", later)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.renew_leases("engine-a", later + 1).await.unwrap(), 1);
    assert_eq!(s.renew_leases("engine-b", later + 1).await.unwrap(), 0);

    // engine-a goes silent; its lease runs out and engine-b takes over with a newer token.
    assert_eq!(s.renew_leases("engine-a", now_ms() - 1).await.unwrap(), 1);
    let second = s
        .acquire_lease("fp1", "engine-b", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.token, 2);

    // engine-a's late write presents token 1: refused, and nothing of it is recorded as done.
    let outputs = vec![OutputArtifact {
        name: "model".into(),
        digest: "sha256:0b".into(),
        size: 1,
        files: 1,
    }];
    let completion = |lease| StageCompletion {
        run_id: "r1",
        stage: "train",
        status: StageStatus::Succeeded,
        attempt_id: Some(&id),
        cached_from_run: None,
        outputs: &outputs,
        fingerprint: None,
        lease: Some(lease),
    };
    let stale = completion(&first);
    let err = s
        .finish_attempt(&AttemptFinish {
            attempt_id: &id,
            status: AttemptStatus::Succeeded,
            exit_code: Some(0),
            error: None,
            log: None,
            finished_at: now_ms(),
            completion: Some(&stale),
        })
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("fencing token 1 is stale"),
        "{err:#}"
    );
    let attempt = s.get_attempt(&id).await.unwrap().unwrap();
    assert_eq!(attempt.status, AttemptStatus::Failed);
    assert!(attempt.error.unwrap().contains("taken over"));
    assert!(s.stage_outputs("r1", "train").await.unwrap().is_empty());
    assert!(s.complete_stage(&completion(&first)).await.is_err());

    // The current holder's write goes through and releases the lease; the next taker gets 3.
    s.complete_stage(&completion(&second)).await.unwrap();
    assert_eq!(s.stage_outputs("r1", "train").await.unwrap().len(), 1);
    assert_eq!(s.renew_leases("engine-b", later).await.unwrap(), 0);
    let third = s
        .acquire_lease("fp1", "engine-c", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.token, 3);
    s.release_lease(&third).await.unwrap();
    s.release_lease(&second).await.unwrap(); // stale: a no-op
    assert_eq!(
        s.acquire_lease("fp1", "engine-a", later)
            .await
            .unwrap()
            .map(|l| l.token),
        Some(4)
    );
}

async fn metrics_of_a_run_and_their_latest_values(s: State) {
    let first = started_attempt(&s, "train").await;
    for (seq, step, name, value) in [
        (1, Some(10), "loss", 3.0),
        (2, Some(10), "lr", 1e-4),
        (3, Some(20), "loss", 2.5),
        (4, None, "tokens", 7.0),
    ] {
        s.record_metric(&first, seq, step, name, value)
            .await
            .unwrap();
    }
    // A second attempt of the stage and another stage.
    let second = s
        .start_attempt(&NewAttempt {
            run_id: "r1",
            stage: "train",
            number: 2,
            host: "h",
            inputs: &[],
            resumed_from: None,
            fingerprint: None,
        })
        .await
        .unwrap();
    s.record_metric(&second, 1, Some(30), "loss", 2.0)
        .await
        .unwrap();
    s.upsert_stage(&StageUpdate {
        run_id: "r1",
        stage: "eval",
        status: StageStatus::Pending,
        fingerprint: None,
        fingerprint_json: None,
        cached_from_run: None,
        error: None,
    })
    .await
    .unwrap();
    let eval = s
        .start_attempt(&NewAttempt {
            run_id: "r1",
            stage: "eval",
            number: 1,
            host: "h",
            inputs: &[],
            resumed_from: None,
            fingerprint: None,
        })
        .await
        .unwrap();
    s.record_metric(&eval, 1, Some(1), "accuracy", 0.5)
        .await
        .unwrap();

    let latest = s.latest_metric_values(&first).await.unwrap();
    let brief: Vec<(&str, f64, Option<u64>, i64)> = latest
        .iter()
        .map(|m| (m.name.as_str(), m.value, m.step, m.seq))
        .collect();
    assert_eq!(
        brief,
        vec![
            ("loss", 2.5, Some(20), 3),
            ("lr", 1e-4, Some(10), 2),
            ("tokens", 7.0, None, 4)
        ]
    );

    let all = s.run_metrics("r1", None).await.unwrap();
    let brief: Vec<(&str, u32, i64, &str)> = all
        .iter()
        .map(|m| (m.stage.as_str(), m.attempt, m.seq, m.name.as_str()))
        .collect();
    assert_eq!(
        brief,
        vec![
            ("eval", 1, 1, "accuracy"),
            ("train", 1, 1, "loss"),
            ("train", 1, 2, "lr"),
            ("train", 1, 3, "loss"),
            ("train", 1, 4, "tokens"),
            ("train", 2, 1, "loss"),
        ]
    );
    assert!(all.iter().all(|m| m.at > 0));
    assert_eq!(all[4].step, None);
    let train = s.run_metrics("r1", Some("train")).await.unwrap();
    assert_eq!(train, all[1..].to_vec());
    assert!(s.run_metrics("r1", Some("nope")).await.unwrap().is_empty());
}
