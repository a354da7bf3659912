//! `leo lineage` of a 4-stage workflow's final artifact: every upstream artifact and attempt,
//! with params and code version (the workflow repository's git commit), and OpenLineage
//! RunEvents that validate against the published schema (`../shared/data/openlineage`).

use std::process::{Command, Stdio};

use leo_e2e::{diamond, output_digest, repo_root, Sandbox};
use serde_json::Value;

fn git(sb: &Sandbox, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=leo", "-c", "user.email=leo@localhost"])
        .args(args)
        .current_dir(sb.path())
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every `produced_by` in the lineage tree.
fn producers(v: &Value, out: &mut Vec<Value>) {
    if let Some(p) = v.get("produced_by").filter(|p| !p.is_null()) {
        out.push(p.clone());
    }
    for c in v["inputs"].as_array().into_iter().flatten() {
        producers(c, out);
    }
}

#[test]
fn lineage_reaches_every_upstream_attempt_with_params_and_code_version() {
    let sb = Sandbox::new();
    diamond(&sb, 4, false, false);
    git(&sb, &["init", "-q"]);
    git(&sb, &["add", "diamond.toml"]);
    git(&sb, &["commit", "-q", "-m", "workflow"]);
    let commit = git(&sb, &["rev-parse", "HEAD"]);
    sb.leo_ok(&["run", "diamond.toml"]);
    let status = sb.status(None);
    let report = output_digest(&status, "d", "report");

    let tree = sb.leo_json(&["lineage", &report, "--format", "json"]);
    let mut found = Vec::new();
    producers(&tree, &mut found);
    let mut stages: Vec<&str> = found.iter().filter_map(|p| p["stage"].as_str()).collect();
    stages.sort();
    stages.dedup();
    assert_eq!(stages, ["a", "b", "c", "d"]);
    for p in &found {
        assert!(
            p["code"]["params"]["run"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{p}"
        );
        assert_eq!(p["code"]["plugin"]["name"], "shell", "{p}");
        assert_eq!(p["provenance"]["git"]["commit"], commit.as_str(), "{p}");
        assert_eq!(p["provenance"]["git"]["dirty"], false, "{p}");
        assert_eq!(p["provenance"]["leo_version"], env!("CARGO_PKG_VERSION"));
        assert!(p["started_at"].as_i64().is_some() && p["finished_at"].as_i64().is_some());
    }

    // Dot and Mermaid name every attempt.
    for format in ["dot", "mermaid"] {
        let text = sb.leo_ok(&["lineage", &report, "--format", format]);
        for s in ["a #1", "b #1", "c #1", "d #1"] {
            assert!(text.contains(s), "{format} lacks {s}:\n{text}");
        }
    }

    // OpenLineage: one COMPLETE event per attempt, valid against the published schema.
    let events = sb.leo_ok(&["lineage", &report, "--format", "openlineage"]);
    let parsed: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event per line"))
        .collect();
    assert_eq!(parsed.len(), 4);
    let d = parsed
        .iter()
        .find(|e| e["job"]["name"] == "d")
        .expect("d's event");
    assert_eq!(d["eventType"], "COMPLETE");
    assert_eq!(d["outputs"][0]["name"], report.as_str());
    assert_eq!(d["inputs"].as_array().map(Vec::len), Some(2));
    assert_eq!(d["run"]["facets"]["parent"]["job"]["name"], "diamond");

    let schema = repo_root().join("../shared/data/openlineage/OpenLineage.json");
    assert!(
        schema.exists(),
        "{} is missing: the tests need ../shared/data beside the clone",
        schema.display()
    );
    let python = std::env::var_os("LEO_TORCH_PYTHON")
        .expect("LEO_TORCH_PYTHON is not set: run the tests with `just test`");
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/support/validate_openlineage.py"))
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("validator");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(events.as_bytes())
        .expect("write events");
    let out = child.wait_with_output().expect("validator output");
    assert!(
        out.status.success(),
        "OpenLineage events do not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The same lineage from the store's .leo-artifact.json records alone, without the database.
    let store_url = status["run"]["store_url"]
        .as_str()
        .expect("store url")
        .to_string();
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(sb.path().join(".leo").join(f));
    }
    let from_store = sb
        .cmd(&[
            "lineage",
            &report,
            "--from-store",
            &store_url,
            "--format",
            "json",
        ])
        .env("LEO_STATE_URL", "/nonexistent/state.db")
        .output()
        .expect("lineage --from-store");
    assert!(
        from_store.status.success(),
        "{}",
        String::from_utf8_lossy(&from_store.stderr)
    );
    let from_store: Value = serde_json::from_slice(&from_store.stdout).expect("json");
    let mut again = Vec::new();
    producers(&from_store, &mut again);
    let key = |p: &Value| {
        (
            p["stage"].as_str().unwrap_or("?").to_string(),
            p["code"]["params"]["run"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            p["provenance"]["git"]["commit"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        )
    };
    let mut a: Vec<_> = found.iter().map(key).collect();
    let mut b: Vec<_> = again.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "lineage from the store differs from the database's");
}

#[test]
fn what_a_stage_reports_about_its_environment_is_in_its_lineage() {
    let sb = Sandbox::new();
    sb.write(
        "env.toml",
        r#"[workflow]
name = "env"

[stages.train]
plugin = "shell"
params = { outputs = ["model"], run = """
echo '{"event": "environment", "facts": {"libtorch": "2.11.0", "world_size": 2}}'
echo '{"event": "environment", "facts": {"cuda": null}}'
echo weights > $LEO_OUTPUT_MODEL/w.bin
""" }
"#,
    );
    sb.leo_ok(&["run", "env.toml"]);
    let status = sb.status(None);
    let model = output_digest(&status, "train", "model");
    let store_url = status["run"]["store_url"]
        .as_str()
        .expect("store")
        .to_string();
    let from_db = sb.leo_json(&["lineage", &model, "--format", "json"]);
    let from_store = sb.leo_json(&[
        "lineage",
        &model,
        "--from-store",
        &store_url,
        "--format",
        "json",
    ]);
    for tree in [&from_db, &from_store] {
        let env = &tree["produced_by"]["environment"];
        assert_eq!(env["libtorch"], "2.11.0", "{tree}");
        assert_eq!(env["world_size"], 2, "{tree}");
        assert!(env.get("cuda").is_some_and(Value::is_null), "{tree}");
    }
}
