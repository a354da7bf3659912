//! Unchanged stages are reused; a changed param reruns exactly that stage and its descendants,
//! and `leo plan` names the field that changed.

use leo_e2e::*;

#[test]
fn unchanged_workflow_reruns_nothing_and_a_param_change_reruns_its_descendants() {
    let sb = Sandbox::new();
    diamond(&sb, 4, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    let first = sb.status(None);

    // Nothing changed: nothing executes, everything is cached.
    let plan = sb.leo_ok(&["plan", "diamond.toml"]);
    assert!(plan.contains("0 to run, 4 cached"), "{plan}");
    sb.leo_ok(&["run", "diamond.toml"]);
    let second = sb.status(None);
    assert_ne!(second["run"]["id"], first["run"]["id"]);
    for s in ["a", "b", "c", "d"] {
        assert_eq!(stage(&second, s)["status"], "cached");
        assert_eq!(
            stage(&second, s)["attempts"],
            0,
            "cached stage {s} must not execute"
        );
        assert_eq!(stage(&second, s)["cached_from_run"], first["run"]["id"]);
    }
    assert_eq!(output_digests(&second), output_digests(&first));

    // Change one param of c: plan names it; c and d rerun, a and b stay cached.
    let text = std::fs::read_to_string(sb.path().join("diamond.toml")).unwrap();
    let changed = text.replace("| tr -d ' ' >", "| tr -d ' \\\\n' >");
    assert_ne!(text, changed);
    sb.write("diamond.toml", changed);
    let plan = sb.leo_json(&["plan", "diamond.toml", "--json"]);
    let entry = |name: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|e| e["stage"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(entry("a")["status"], "cached");
    assert_eq!(entry("b")["status"], "cached");
    assert_eq!(entry("c")["status"], "run");
    let c_changed = entry("c")["changed"].as_array().unwrap().clone();
    assert_eq!(c_changed.len(), 1);
    assert!(
        c_changed[0].as_str().unwrap().starts_with("params.run: "),
        "{c_changed:?}"
    );
    assert_eq!(entry("d")["status"], "run");
    let human = sb.leo_ok(&["plan", "diamond.toml"]);
    assert!(human.contains("changed params.run"), "{human}");

    sb.leo_ok(&["run", "diamond.toml"]);
    let third = sb.status(None);
    let statuses: Vec<(&str, &str, i64)> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| {
            (
                *s,
                stage(&third, s)["status"].as_str().unwrap(),
                stage(&third, s)["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("a", "cached", 0),
            ("b", "cached", 0),
            ("c", "succeeded", 1),
            ("d", "succeeded", 1)
        ]
    );
    assert_ne!(stage(&third, "c")["outputs"], stage(&first, "c")["outputs"]);
}

#[test]
fn a_deleted_artifact_is_not_reused() {
    let sb = Sandbox::new();
    diamond(&sb, 3, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    let first = sb.status(None);
    let digest = stage(&first, "d")["outputs"]["report"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(
        sb.store_root()
            .join(format!("manifests/sha256/{}.json", &digest[7..])),
    )
    .unwrap();
    let plan = sb.leo_ok(&["plan", "diamond.toml"]);
    assert!(plan.contains("1 to run, 3 cached"), "{plan}");
    sb.leo_ok(&["run", "diamond.toml"]);
    let second = sb.status(None);
    assert_eq!(stage(&second, "d")["status"], "succeeded");
    assert_eq!(
        stage(&second, "d")["outputs"]["report"],
        digest.as_str(),
        "same inputs, same artifact"
    );
}

#[test]
fn an_external_input_is_rehashed_only_when_it_changes() {
    let sb = Sandbox::new();
    let data = sb.write("data.txt", "hallo welt\n");
    let age = |secs: u64| {
        let f = std::fs::File::options().write(true).open(&data).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap();
    };
    age(600);
    sb.write(
        "ext.toml",
        format!(
            "[workflow]\nname = \"ext\"\n[stages.copy]\nplugin = \"shell\"\ninputs = {{ raw = \"file://{}\" }}\n\
             params = {{ run = \"cp $LEO_INPUT_RAW $LEO_OUTPUT_OUT/\", outputs = [\"out\"] }}\n",
            data.display()
        ),
    );
    sb.leo_ok(&["run", "ext.toml"]);
    let first = sb.status(None);
    sb.leo_ok(&["run", "ext.toml"]);
    assert_eq!(stage(&sb.status(None), "copy")["status"], "cached");

    // Same size, new content, another (old) modification time: the stage must run again.
    sb.write("data.txt", "hallo mond\n");
    age(300);
    let plan = sb.leo_ok(&["plan", "ext.toml"]);
    assert!(plan.contains("changed inputs.raw"), "{plan}");
    sb.leo_ok(&["run", "ext.toml"]);
    let third = sb.status(None);
    assert_eq!(stage(&third, "copy")["status"], "succeeded");
    assert_ne!(
        stage(&third, "copy")["outputs"],
        stage(&first, "copy")["outputs"]
    );
}
