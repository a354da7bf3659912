//! Engines sharing one PostgreSQL state and one S3 store (throwaway servers on loopback), as a
//! team's machines do: leases make every piece of work run once, and work whose engine died is
//! taken over once its lease expires.

use std::time::Duration;

use leo_e2e::{diamond, output_digest, output_digests, sigkill, stage, wait_until, Sandbox};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn stderr_of(sb: &Sandbox, log: &str) -> String {
    std::fs::read_to_string(sb.path().join(format!("{log}.stderr"))).unwrap_or_default()
}

fn runs(sb: &Sandbox) -> Vec<String> {
    sb.leo_json(&["list", "--json"])
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// Attempts of `name` in a run's status.
fn attempts(status: &Value, name: &str) -> i64 {
    stage(status, name)["attempts"].as_i64().expect("attempts")
}

#[test]
fn two_engines_on_one_workflow_run_every_stage_once() {
    let sb = Sandbox::team();
    // Stage b waits for the file `go`, so the first engine holds b's lease while the second
    // engine arrives.
    diamond(&sb, 5, false, true);
    let mut first = sb.spawn(&["run", "diamond.toml"], "first");
    wait_until("the first engine to run b", WAIT, || {
        sb.path().join("b-started").exists()
    });
    let mut second = sb.spawn(&["run", "diamond.toml"], "second");
    wait_until("the second engine to wait for b's lease", WAIT, || {
        stderr_of(&sb, "second").contains("waiting   b")
    });
    std::fs::write(sb.path().join("go"), b"").expect("open the gate");
    for (name, child) in [("first", &mut first), ("second", &mut second)] {
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "{name} engine: {status}\n{}",
            stderr_of(&sb, name)
        );
    }

    let ids = runs(&sb);
    assert_eq!(ids.len(), 2);
    let statuses: Vec<Value> = ids.iter().map(|id| sb.status(Some(id))).collect();
    for s in &statuses {
        assert_eq!(s["run"]["status"], "succeeded");
    }
    // Every stage ran exactly once across both engines; the other engine took it from the cache.
    for name in ["a", "b", "c", "d"] {
        let total: i64 = statuses.iter().map(|s| attempts(s, name)).sum();
        assert_eq!(total, 1, "stage {name} ran {total} times");
        let kinds: Vec<&str> = statuses
            .iter()
            .map(|s| stage(s, name)["status"].as_str().unwrap_or("?"))
            .collect();
        assert!(
            kinds.contains(&"succeeded") && kinds.contains(&"cached"),
            "stage {name}: {kinds:?}"
        );
    }
    assert_eq!(output_digests(&statuses[0]), output_digests(&statuses[1]));
}

#[test]
fn work_of_a_killed_engine_is_taken_over_when_its_lease_expires() {
    let sb = Sandbox::team();
    diamond(&sb, 5, false, true);
    let ttl = [("LEO_LEASE_TTL", "1.5")];
    let mut first = sb
        .cmd(&["run", "diamond.toml"])
        .envs(ttl)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the first engine");
    wait_until("the first engine to run b", WAIT, || {
        sb.path().join("b-started").exists()
    });
    sigkill(&mut first);
    std::fs::remove_file(sb.path().join("b-started")).expect("reset the marker");
    std::fs::write(sb.path().join("go"), b"").expect("open the gate");

    // A second engine (a new run of the same workflow) finds b's lease still live, waits, and
    // takes the work over once the dead engine's lease has expired.
    let out = sb
        .cmd(&["run", "diamond.toml"])
        .envs(ttl)
        .output()
        .expect("run the second engine");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second engine failed:\n{err}");
    assert!(
        err.contains("waiting   b"),
        "the lease was not live:\n{err}"
    );
    assert!(sb.path().join("b-started").exists(), "b did not run again");
    let second = sb.status(None);
    assert_eq!(second["run"]["status"], "succeeded");
    assert_eq!(stage(&second, "b")["status"], "succeeded");
    assert_eq!(attempts(&second, "b"), 1);
    assert_eq!(stage(&second, "a")["status"], "cached");
}

#[test]
fn a_workflow_completes_with_correct_digests_when_a_fifth_of_store_requests_fail() {
    let sb = Sandbox::team();
    let s3 = sb.s3().expect("team storage");
    let proxy = leo_testkit::FaultyProxy::start(&s3.endpoint(), 0.2, 11).expect("proxy");
    diamond(&sb, 7, false, false);
    let out = sb
        .cmd(&["run", "diamond.toml"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .output()
        .expect("leo run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = proxy.counts();
    let injected = c.errors.load(std::sync::atomic::Ordering::Relaxed)
        + c.resets.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 0, "no fault was injected: {c:?}");

    // The same workflow on healthy local storage yields the same artifacts.
    let reference = Sandbox::local();
    diamond(&reference, 7, false, false);
    reference.leo_ok(&["run", "diamond.toml"]);
    assert_eq!(
        output_digests(&sb.status(None)),
        output_digests(&reference.status(None))
    );
}

#[test]
fn an_upload_killed_midway_leaves_no_visible_artifact() {
    let workflow = r#"[workflow]
name = "big"

[stages.big]
plugin = "shell"
params = { outputs = ["data"], run = "head -c 100000000 /dev/zero | tr '\\0' x > $LEO_OUTPUT_DATA/data.bin" }
"#;
    // The digest the output will have, from a run on local storage.
    let reference = Sandbox::local();
    reference.write("big.toml", workflow);
    reference.leo_ok(&["run", "big.toml"]);
    let digest = output_digest(&reference.status(None), "big", "data");

    let sb = Sandbox::team();
    sb.write("big.toml", workflow);
    let s3 = sb.s3().expect("team storage");
    let proxy =
        leo_testkit::FaultyProxy::slow(&s3.endpoint(), Duration::from_millis(150)).expect("proxy");
    let mut engine = sb
        .cmd(&["run", "big.toml"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn leo");
    wait_until("two parts of the upload to land", WAIT, || {
        proxy
            .counts()
            .parts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    });
    sigkill(&mut engine);

    let manifest = sb
        .store_root()
        .join(format!("manifests/sha256/{}.json", &digest[7..]));
    assert!(!manifest.exists(), "a half-uploaded artifact is visible");
    let run_id = runs(&sb).pop().expect("the killed run");
    let status = sb.status(Some(&run_id));
    assert!(stage(&status, "big")["outputs"]["data"].is_null());

    // Resume stores it whole; it verifies.
    sb.leo_ok(&["resume", &run_id]);
    let status = sb.status(Some(&run_id));
    assert_eq!(stage(&status, "big")["outputs"]["data"], digest.as_str());
    assert!(manifest.exists());
    assert!(sb.leo_ok(&["verify", &digest]).contains("intact"));
}
