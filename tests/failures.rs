//! A crashing or hanging stage fails its attempt, never the scheduler: other branches finish,
//! dependents are skipped, retries back off, and logs are kept.

use leo_e2e::*;

#[test]
fn crashes_and_timeouts_fail_only_their_branch() {
    let sb = Sandbox::new();
    sb.write(
        "faulty.toml",
        r#"[workflow]
name = "faulty"

[stages.crash]
plugin = "shell"
params = { run = "echo about to crash; kill -SEGV $$" }

[stages.hang]
plugin = "shell"
timeout = "1s"
params = { run = "echo hanging; exec sleep 600" }

[stages.healthy]
plugin = "shell"
params = { run = "echo fine > $LEO_OUTPUT_OUT/x; echo '{\"event\": \"log\", \"level\": \"warn\", \"message\": \"careful\"}'", outputs = ["out"] }

[stages.after-crash]
plugin = "shell"
needs = ["crash"]
params = { run = "true" }

[stages.after-healthy]
plugin = "shell"
inputs = { x = "healthy.out" }
params = { run = "cat $LEO_INPUT_X/x" }
"#,
    );
    let out = sb.leo(&["run", "faulty.toml", "--grace", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = sb.status(None);
    assert_eq!(st["run"]["status"], "failed");
    assert_eq!(stage(&st, "healthy")["status"], "succeeded");
    assert_eq!(stage(&st, "after-healthy")["status"], "succeeded");
    assert_eq!(stage(&st, "after-crash")["status"], "skipped");
    assert_eq!(stage(&st, "after-crash")["attempts"], 0);

    let crash = &stage(&st, "crash")["attempt_list"][0];
    assert_eq!(crash["status"], "failed");
    let err = crash["error"].as_str().unwrap();
    assert!(
        err.contains("exited with code 139")
            && err.contains("about to crash")
            && err.contains("signal 11"),
        "{err}"
    );

    let hang = &stage(&st, "hang")["attempt_list"][0];
    assert_eq!(hang["status"], "timed_out");
    assert!(hang["error"]
        .as_str()
        .unwrap()
        .contains("timed out after 1.0s"));

    let run = st["run"]["id"].as_str().unwrap();
    let log = sb.leo_ok(&["logs", run, "hang"]);
    assert_eq!(log, "hanging\n");
    let log = sb.leo_ok(&["logs", run, "after-healthy"]);
    assert_eq!(log, "fine\n");
    // `log` events read as text; other protocol events stay out of the way unless --raw.
    let log = sb.leo_ok(&["logs", run, "healthy"]);
    assert_eq!(log, "[warn] careful\n");
    let raw = sb.leo_ok(&["logs", run, "healthy", "--raw"]);
    assert!(raw.contains(r#""event":"output""#), "{raw}");
}

#[test]
fn flaky_stage_is_retried_until_it_succeeds() {
    let sb = Sandbox::new();
    let counter = sb.path().join("tries");
    sb.write(
        "flaky.toml",
        format!(
            r#"[workflow]
name = "flaky"

[stages.flaky]
plugin = "shell"
retries = 3
params = {{ run = "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]" }}
"#,
            counter.display()
        ),
    );
    let out = sb.leo(&["run", "flaky.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retrying  flaky: attempt 2"), "{stderr}");
    let st = sb.status(None);
    let attempts = stage(&st, "flaky")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["failed", "failed", "succeeded"]);
}

#[test]
fn stage_without_retries_fails_once() {
    let sb = Sandbox::new();
    sb.write(
        "f.toml",
        "[workflow]\nname = \"f\"\n[stages.f]\nplugin = \"shell\"\nparams = { run = \"exit 3\" }\n",
    );
    let out = sb.leo(&["run", "f.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let st = sb.status(None);
    assert_eq!(stage(&st, "f")["attempts"], 1);
    assert_eq!(stage(&st, "f")["attempt_list"][0]["exit_code"], 3);
}

#[test]
fn a_background_process_neither_hangs_the_stage_nor_outlives_it() {
    let sb = Sandbox::new();
    let pidfile = sb.path().join("bg.pid");
    sb.write(
        "bg.toml",
        format!(
            "[workflow]\nname = \"bg\"\n[stages.bg]\nplugin = \"shell\"\n\
             params = {{ run = \"sleep 600 & echo $! > {}; echo started\" }}\n",
            pidfile.display()
        ),
    );
    sb.leo_ok(&["run", "bg.toml"]);
    let st = sb.status(None);
    assert_eq!(stage(&st, "bg")["status"], "succeeded");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        !alive(&pid),
        "the background sleep (pid {pid}) must go with its attempt"
    );
}
