//! A killed stage continues from its last checkpoint: an external plugin that counts to N
//! with a checkpoint every k steps.

use std::time::Duration;

use leo_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn counter_workflow(sb: &Sandbox, extra: &str, retries: u32) {
    let plugin = repo_root().join("tests/plugins/counter.py");
    sb.write(
        "count.toml",
        format!(
            "[workflow]\nname = \"count\"\n\n[stages.count]\nplugin = \"exec:{}\"\nretries = {retries}\n\
             params = {{ n = 20, every = 5, dir = \"{}\"{extra} }}\n",
            plugin.display(),
            sb.path().display()
        ),
    );
}

fn result(sb: &Sandbox, status: &Value) -> Value {
    let digest = stage(status, "count")["outputs"]["count"]
        .as_str()
        .expect("output")
        .to_string();
    let dest = sb.path().join("result");
    // Read the artifact back out of the store, as a user would.
    let store = sb.store_root();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(store.join(format!("manifests/sha256/{}.json", &digest[7..])))
            .expect("manifest"),
    )
    .expect("manifest json");
    let mut out = serde_json::Map::new();
    for f in manifest["files"].as_array().expect("files") {
        let sha = f["sha256"].as_str().unwrap();
        let bytes =
            std::fs::read(store.join(format!("blobs/sha256/{}/{}", &sha[..2], sha))).expect("blob");
        out.insert(
            f["path"].as_str().unwrap().to_string(),
            Value::String(String::from_utf8_lossy(&bytes).into()),
        );
    }
    let _ = dest;
    Value::Object(out)
}

#[test]
fn killed_engine_resumes_the_stage_from_its_last_checkpoint() {
    let sb = Sandbox::new();
    counter_workflow(&sb, ", stall_at = 12", 0);
    let mut leo = sb.spawn(&["run", "count.toml"], "run");
    let run = {
        wait_until("the run to be recorded", WAIT, || {
            sb.leo(&["list", "--json"]).status.success()
                && sb.leo_json(&["list", "--json"])[0]["id"].is_string()
        });
        sb.latest_run()
    };
    // The plugin stalls before step 12; wait until the engine has stored the step-10 checkpoint.
    wait_until("checkpoint 10 to be stored", WAIT, || {
        let st = sb.status(Some(&run));
        stage(&st, "count")["checkpoints"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["step"] == 10))
    });
    sigkill(&mut leo);

    // The stall only applies once: the released marker lets the resumed attempt through.
    sb.write("release", "");
    sb.leo_ok(&["resume", &run]);
    let st = sb.status(Some(&run));
    assert_eq!(st["run"]["status"], "succeeded");
    let attempts = stage(&st, "count")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "lost");
    let ckpt10 = stage(&st, "count")["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["step"] == 10)
        .unwrap()["digest"]
        .clone();
    assert_eq!(
        attempts[1]["resumed_from"], ckpt10,
        "attempt 2 got the step-10 checkpoint"
    );

    let r = result(&sb, &st);
    let summary: Value = serde_json::from_str(r["result.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        summary["started_from"], 10,
        "continued from its checkpoint, not from 0"
    );
    assert_eq!(r["steps-this-attempt.txt"], "11 12 13 14 15 16 17 18 19 20");

    // The log of the second attempt says so, and lineage records the resumed-from edge.
    let log = sb.leo_ok(&["logs", &run, "count"]);
    assert!(log.contains("resuming from step 10"), "{log}");
    let out = stage(&st, "count")["outputs"]["count"]
        .as_str()
        .unwrap()
        .to_string();
    let tree = sb.leo_json(&["lineage", &out, "--json"]);
    let inputs = tree["inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["relation"] == "resumed_from" && i["artifact"] == ckpt10),
        "{tree}"
    );
}

#[test]
fn a_crashed_attempt_is_retried_from_its_last_checkpoint() {
    let sb = Sandbox::new();
    counter_workflow(&sb, ", crash_at = 8", 1);
    sb.leo_ok(&["run", "count.toml"]);
    let st = sb.status(None);
    let attempts = stage(&st, "count")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "failed");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("signal 9"),
        "{}",
        attempts[0]
    );
    let r = result(&sb, &st);
    let summary: Value = serde_json::from_str(r["result.json"].as_str().unwrap()).unwrap();
    assert_eq!(summary["started_from"], 5);
}

#[test]
fn external_plugins_validate_their_params() {
    let sb = Sandbox::new();
    let plugin = repo_root().join("tests/plugins/counter.py");
    sb.write(
        "bad.toml",
        format!(
            "[workflow]\nname = \"count\"\n[stages.count]\nplugin = \"exec:{}\"\nparams = {{ n = \"many\", every = 5 }}\n",
            plugin.display()
        ),
    );
    let out = sb.leo(&["validate", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: bad.toml:5:12: stages.count.params.n: must be a positive integer"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_written_on_sigterm_is_kept_and_resumed_from() {
    let sb = Sandbox::new();
    counter_workflow(&sb, ", stall_at = 12", 0);
    let mut leo = sb.spawn(&["run", "count.toml", "--grace", "30"], "run");
    let stalled = sb.path().join("stalled");
    wait_until("the plugin to stall before step 12", WAIT, || {
        stalled.exists()
    });
    sigterm(&leo);
    assert_eq!(leo.wait().expect("wait").code(), Some(130));
    let run = sb.latest_run();
    let st = sb.status(Some(&run));
    assert_eq!(st["run"]["status"], "cancelled");
    let steps: Vec<u64> = stage(&st, "count")["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        vec![5, 10, 11],
        "the step-11 checkpoint written on SIGTERM is recorded"
    );

    sb.write("release", "");
    sb.leo_ok(&["resume", &run]);
    let st = sb.status(Some(&run));
    let r = result(&sb, &st);
    let summary: Value = serde_json::from_str(r["result.json"].as_str().unwrap()).unwrap();
    assert_eq!(summary["started_from"], 11);
}
