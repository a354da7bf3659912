//! Killed and cancelled runs finish with `leo resume`, without redoing finished stages and
//! with the same artifacts as an uninterrupted run.

use std::time::Duration;

use leo_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// Digests of a run of the gated diamond that was never interrupted.
fn uninterrupted_digests() -> serde_json::Value {
    let sb = Sandbox::new();
    diamond(&sb, 5, false, true);
    sb.write("go", "");
    sb.leo_ok(&["run", "diamond.toml"]);
    output_digests(&sb.status(None))
}

#[test]
fn sigkilled_run_resumes_without_redoing_finished_stages() {
    let sb = Sandbox::new();
    diamond(&sb, 5, false, true);
    let mut leo = sb.spawn(&["run", "diamond.toml"], "run");
    let started = sb.path().join("b-started");
    wait_until("stage b to start", WAIT, || started.exists());
    // c does not wait for anything: let it finish so the kill hits b alone.
    wait_until("stage c to finish", WAIT, || {
        stage(&sb.status(None), "c")["status"] == "succeeded"
    });
    sigkill(&mut leo);

    let run = sb.latest_run();
    let before = sb.status(Some(&run));
    assert_eq!(
        before["run"]["status"], "running",
        "a killed engine leaves the run marked running"
    );
    assert_eq!(stage(&before, "a")["status"], "succeeded");
    assert_eq!(stage(&before, "b")["status"], "running");

    sb.write("go", "");
    sb.leo_ok(&["resume", &run]);
    let after = sb.status(Some(&run));
    assert_eq!(after["run"]["status"], "succeeded");
    let counts = attempt_counts(&after);
    // a finished before the kill and is not executed again; b was lost and ran again.
    assert_eq!(
        counts,
        vec![
            ("a".into(), 1),
            ("b".into(), 2),
            ("c".into(), 1),
            ("d".into(), 1)
        ],
        "{after}"
    );
    let b_attempts = stage(&after, "b")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(b_attempts[0]["status"], "lost");
    assert_eq!(b_attempts[1]["status"], "succeeded");
    assert_eq!(output_digests(&after), uninterrupted_digests());
}

#[test]
fn sigterm_cancels_cleanly_and_resume_finishes() {
    let sb = Sandbox::new();
    diamond(&sb, 5, false, true);
    let mut leo = sb.spawn(&["run", "diamond.toml", "--grace", "5"], "run");
    let started = sb.path().join("b-started");
    wait_until("stage b to start", WAIT, || started.exists());
    sigterm(&leo);
    let code = leo.wait().expect("wait");
    assert_eq!(code.code(), Some(130), "a cancelled run exits with 130");
    let run = sb.latest_run();
    let st = sb.status(Some(&run));
    assert_eq!(st["run"]["status"], "cancelled");
    assert_eq!(stage(&st, "b")["status"], "cancelled");
    assert_eq!(stage(&st, "b")["attempt_list"][0]["status"], "cancelled");

    sb.write("go", "");
    sb.leo_ok(&["resume", &run]);
    let after = sb.status(Some(&run));
    assert_eq!(after["run"]["status"], "succeeded");
    assert_eq!(stage(&after, "a")["attempts"], 1);
    assert_eq!(stage(&after, "b")["attempts"], 2);
    assert_eq!(output_digests(&after), uninterrupted_digests());
}

#[test]
fn resume_refuses_a_run_whose_engine_is_alive_and_unknown_runs() {
    let sb = Sandbox::new();
    diamond(&sb, 5, false, true);
    let mut leo = sb.spawn(&["run", "diamond.toml"], "run");
    let started = sb.path().join("b-started");
    wait_until("stage b to start", WAIT, || started.exists());
    let run = sb.latest_run();
    assert_eq!(sb.status(Some(&run))["run"]["engine_gone"], false);
    let out = sb.leo(&["resume", &run]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still being executed"), "{err}");
    sb.write("go", "");
    assert!(leo.wait().expect("wait").success());

    let out = sb.leo(&["resume", "no-such-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run `no-such-run`"));
}

#[test]
fn resume_kills_what_a_killed_engine_left_running() {
    let sb = Sandbox::new();
    let dir = sb.path().display().to_string();
    sb.write(
        "left.toml",
        format!(
            "[workflow]\nname = \"left\"\n[stages.work]\nplugin = \"shell\"\n\
             params = {{ run = \"[ -f {dir}/go ] && exit 0; sleep 600 & echo $! > {dir}/bg.pid; touch {dir}/started; wait\" }}\n"
        ),
    );
    let mut leo = sb.spawn(&["run", "left.toml"], "run");
    let started = sb.path().join("started");
    wait_until("the stage to start its background work", WAIT, || {
        started.exists()
    });
    sigkill(&mut leo);
    let pid = std::fs::read_to_string(sb.path().join("bg.pid")).unwrap();
    // The worker and its shell die with the engine; a grandchild does not.
    wait_until("the worker to die with the engine", WAIT, || {
        let st = sb.status(None);
        stage(&st, "work")["attempt_list"][0]["pid"]
            .as_i64()
            .is_some_and(|p| !alive(&p.to_string()))
    });
    assert!(
        alive(&pid),
        "precondition: the grandchild outlived the engine"
    );
    sb.write("go", "");
    let run = sb.latest_run();
    sb.leo_ok(&["resume", &run]);
    assert!(
        !alive(&pid),
        "leo resume must kill the lost attempt's leftover process {pid}"
    );
}
