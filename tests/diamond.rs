//! A diamond of shell stages runs, and its independent middle stages overlap in time.

use leo_e2e::*;

#[test]
fn diamond_runs_with_the_middle_stages_overlapping() {
    let sb = Sandbox::new();
    diamond(&sb, 4, true, false);
    sb.leo_ok(&["run", "diamond.toml", "--cpus", "2"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded");
    for s in ["a", "b", "c", "d"] {
        assert_eq!(stage(&status, s)["status"], "succeeded", "{status}");
    }
    // From the recorded attempt timestamps: b and c ran at the same time.
    let span = |name: &str| first_attempt_span(&status, name);
    let (b0, b1) = span("b");
    let (c0, c1) = span("c");
    assert!(
        b0 < c1 && c0 < b1,
        "b [{b0}, {b1}] and c [{c0}, {c1}] do not overlap"
    );
    // d started only after both finished.
    let (d0, _) = span("d");
    assert!(d0 >= b1 && d0 >= c1);

    // The report is right, and it is reachable through logs and lineage.
    let report = stage(&status, "d")["outputs"]["report"]
        .as_str()
        .unwrap()
        .to_string();
    let tree = sb.leo_json(&["lineage", &report, "--json"]);
    assert_eq!(tree["produced_by"]["stage"], "d");
    let inputs: Vec<&str> = tree["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["produced_by"]["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        vec!["c", "b"],
        "inputs of d sorted by input name (count, sum)"
    );
    assert_eq!(tree["inputs"][0]["inputs"][0]["produced_by"]["stage"], "a");
    let text = sb.leo_ok(&["lineage", &report[..20]]);
    assert!(
        text.contains("stage d") && text.contains("stage a"),
        "{text}"
    );
    let out = sb.leo_ok(&["graph", "diamond.toml"]);
    assert!(out.contains("\"a\" -> \"b\" [label=\"numbers\"]"), "{out}");
}

#[test]
fn one_cpu_serialises_the_middle_stages() {
    let sb = Sandbox::new();
    diamond(&sb, 4, false, false);
    sb.leo_ok(&["run", "diamond.toml", "--cpus", "1"]);
    let status = sb.status(None);
    let span = |name: &str| first_attempt_span(&status, name);
    let (b0, b1) = span("b");
    let (c0, c1) = span("c");
    assert!(
        b1 <= c0 || c1 <= b0,
        "with one CPU b and c must not overlap"
    );
}
