//! `leo export k8s`: a stage as a Kubernetes indexed Job and its headless Service, checked
//! against the Kubernetes API's schemas by `kubernetes-validate --strict` (the venv of
//! tools/k8s-validate-env.sh, `LEO_K8S_VALIDATE`) for Kubernetes 1.30 and 1.37, the oldest and
//! newest releases these tests vouch for; then the content that matters: one pod per rank, each
//! rank's share of the stage's resources, the rank variables, secrets by reference only, and
//! the command. A copy with a wrong field must fail the same validator, so that passing means
//! something. Without the validator the test is skipped on a workstation and fails in CI
//! (`CI=true`). Needs `leo` and `leo-torch` built (the 13B workflow's torch stages are checked
//! by `leo-torch describe`, as `leo validate` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use leo_e2e::*;
use serde_json::Value;

/// The Kubernetes versions whose schemas the manifests must satisfy.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// A value for the tiny workflow's secret, which must never appear in a manifest.
const SECRET_VALUE: &str = "hf_k8s-export-5e1b7c0d";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `kubernetes-validate` from tools/k8s-validate-env.sh, or `None` (skipped) outside CI.
fn validator() -> Option<PathBuf> {
    match std::env::var_os("LEO_K8S_VALIDATE").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            let missing = "LEO_K8S_VALIDATE is not set or not a file: \
                           `eval \"$(tools/k8s-validate-env.sh)\"`";
            assert!(!in_ci(), "CI=true and {missing}");
            eprintln!("skipped: {missing}");
            None
        }
    }
}

fn validate(validator: &Path, file: &Path, version: &str) -> Output {
    Command::new(validator)
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate")
}

/// Asserts the file passes the schemas of every version, for both of its objects.
fn assert_valid(validator: &Path, file: &Path, job: &str) {
    for version in KUBERNETES_VERSIONS {
        let out = validate(validator, file, version);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{} against Kubernetes {version}: {text}",
            file.display()
        );
        let minor = version.trim_end_matches(".0");
        for object in [format!("service/{job}"), format!("job/{job}")] {
            assert!(
                stdout.contains(&format!(
                    "passed for resource {object} against version {minor}"
                )),
                "{object} not validated: {text}"
            );
        }
    }
}

/// Asserts the file fails the schemas of every version, naming `complaint`.
fn assert_invalid(validator: &Path, file: &Path, complaint: &str) {
    for version in KUBERNETES_VERSIONS {
        let out = validate(validator, file, version);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "a broken manifest passed Kubernetes {version}: {text}"
        );
        assert!(text.contains(complaint), "{complaint} not in: {text}");
    }
}

/// The documents of a YAML stream.
fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .collect()
}

fn export(sb: &Sandbox, workflow: &Path, stage: &str, out: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "k8s",
        workflow.to_str().unwrap(),
        stage,
        "-o",
        out,
    ];
    args.extend(extra);
    let mut cmd = sb.cmd(&args);
    // Nothing reaches the network, and the secret is in leo's environment, where `leo run`
    // would read it: the export must not.
    cmd.env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_TOKEN", SECRET_VALUE);
    let stdout = succeeded(&args, cmd.output().expect("run leo"));
    assert!(stdout.is_empty(), "-o writes nothing to stdout: {stdout}");
    let text = std::fs::read_to_string(sb.path().join(out)).expect("the manifest");
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret's value in the manifest:\n{text}"
    );
    text
}

fn pod_spec(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]
}

fn env<'a>(job: &'a Value, name: &str) -> &'a Value {
    let vars = pod_spec(job)["containers"][0]["env"]
        .as_array()
        .expect("env");
    let found: Vec<&Value> = vars.iter().filter(|v| v["name"] == name).collect();
    assert_eq!(found.len(), 1, "{name} once in {vars:?}");
    found[0]
}

/// The checks every exported stage passes: the objects, their names and how they connect.
fn assert_indexed_job(docs: &[Value], name: &str, ranks: u64) -> Value {
    assert_eq!(docs.len(), 2, "a Service and a Job: {docs:?}");
    let (service, job) = (&docs[0], &docs[1]);
    assert_eq!(service["kind"], "Service");
    assert_eq!(service["metadata"]["name"], name);
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["selector"]["job-name"], name);
    assert_eq!(service["spec"]["ports"][0]["port"], 29500);
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["metadata"]["name"], name);
    assert_eq!(job["metadata"]["labels"]["app.kubernetes.io/name"], "leo");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"].as_u64(), Some(ranks), "{spec}");
    assert_eq!(spec["parallelism"].as_u64(), Some(ranks), "{spec}");
    let pod = pod_spec(job);
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["subdomain"], name);
    let index = serde_json::json!({ "fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    } });
    for rank in ["RANK", "LEO_RANK"] {
        assert_eq!(env(job, rank)["valueFrom"], index, "{rank}");
    }
    for size in ["WORLD_SIZE", "LEO_WORLD_SIZE"] {
        assert_eq!(env(job, size)["value"], ranks.to_string(), "{size}");
    }
    assert_eq!(env(job, "LOCAL_RANK")["value"], "0");
    assert_eq!(env(job, "MASTER_ADDR")["value"], format!("{name}-0.{name}"));
    assert_eq!(env(job, "MASTER_PORT")["value"], "29500");
    job.clone()
}

#[test]
fn stages_export_as_indexed_jobs_that_the_kubernetes_schema_accepts() {
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let Some(validator) = validator() else {
        return;
    };

    // LeoLM 13B's stage 2: 8 GPUs, 64 CPUs and 512 GiB over 8 ranks.
    let leolm = repo_root().join("workflows/leolm-13b.toml");
    let text = export(&sb, &leolm, "pretrain", "13b.yaml", &[]);
    let job = assert_indexed_job(&documents(&text), "leolm-13b-pretrain", 8);
    assert_eq!(job["metadata"]["labels"]["leo.dev/workflow"], "leolm-13b");
    assert_eq!(job["metadata"]["labels"]["leo.dev/stage"], "pretrain");
    let container = &pod_spec(&job)["containers"][0];
    let per_pod = serde_json::json!({ "cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1" });
    assert_eq!(container["resources"]["requests"], per_pod);
    assert_eq!(container["resources"]["limits"], per_pod);
    assert_eq!(
        container["command"],
        serde_json::json!([
            "leo",
            "worker-rank",
            "/leo/work/invocation.json",
            "--",
            "leo-torch",
            "worker",
            "pretrain"
        ])
    );
    assert_eq!(
        container["image"],
        format!("ghcr.io/leo/leo:{}", env!("CARGO_PKG_VERSION"))
    );
    // retries = 10 of 8 ranks each; timeout = "70days".
    assert_eq!(job["spec"]["backoffLimit"], 80);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 70 * 86_400);
    let volumes = &pod_spec(&job)["volumes"];
    assert_eq!(volumes[0]["persistentVolumeClaim"]["claimName"], "leo-work");
    assert_eq!(volumes[1]["emptyDir"]["medium"], "Memory");
    assert_valid(
        &validator,
        &sb.path().join("13b.yaml"),
        "leolm-13b-pretrain",
    );

    // A tiny workflow: an external plugin on 4 ranks, secrets in its env, vars substituted.
    std::fs::create_dir_all(sb.path().join("plugins")).unwrap();
    std::fs::copy(
        repo_root().join("tests/plugins/ranks.py"),
        sb.path().join("plugins/ranks.py"),
    )
    .unwrap();
    let tiny = sb.write(
        "tiny.toml",
        r#"
[workflow]
name = "Tiny_Ranks"
[vars]
mode = "exchange"
[stages.prep]
plugin = "shell"
params = { run = "true" }
[stages.train_ring]
plugin = "exec:plugins/ranks.py"
needs = ["prep"]
resources = { world_size = 4, cpus = 6, memory = "2GiB" }
retries = 1
timeout = "90min"
params = { mode = "${vars.mode}", dir = "/tmp" }
env = { HF_TOKEN = "${secret.HF_TOKEN}", AUTHORIZATION = "Bearer ${secret.HF_TOKEN}", MODE = "${vars.mode}" }
"#,
    );
    let text = export(
        &sb,
        &tiny,
        "train_ring",
        "tiny.yaml",
        &[
            "--namespace",
            "ml",
            "--work-dir",
            "/runs/r1",
            "--image",
            "registry.example/leo:dev",
        ],
    );
    let docs = documents(&text);
    let job = assert_indexed_job(&docs, "tiny-ranks-train-ring", 4);
    assert_eq!(docs[0]["metadata"]["namespace"], "ml");
    assert_eq!(job["metadata"]["namespace"], "ml");
    assert_eq!(job["metadata"]["labels"]["leo.dev/workflow"], "Tiny_Ranks");
    assert_eq!(job["metadata"]["labels"]["leo.dev/stage"], "train_ring");
    let container = &pod_spec(&job)["containers"][0];
    assert_eq!(container["image"], "registry.example/leo:dev");
    // The exec: plugin's path as the workflow wrote it, not this machine's.
    assert_eq!(
        container["command"],
        serde_json::json!([
            "leo",
            "worker-rank",
            "/runs/r1/invocation.json",
            "--",
            "plugins/ranks.py",
            "run"
        ])
    );
    // 6 CPUs over 4 ranks; no GPU: none requested, none visible.
    let per_pod = serde_json::json!({ "cpu": "1500m", "memory": "512Mi" });
    assert_eq!(container["resources"]["limits"], per_pod);
    assert_eq!(env(&job, "CUDA_VISIBLE_DEVICES")["value"], "");
    assert_eq!(job["spec"]["backoffLimit"], 4);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 5400);
    // Secrets by reference only: a whole value from the Secret, text around one through a
    // variable of its own.
    let secret =
        serde_json::json!({ "secretKeyRef": { "name": "leo-secrets", "key": "HF_TOKEN" } });
    assert_eq!(env(&job, "HF_TOKEN")["valueFrom"], secret);
    assert_eq!(env(&job, "LEO_SECRET_HF_TOKEN")["valueFrom"], secret);
    assert_eq!(
        env(&job, "AUTHORIZATION")["value"],
        "Bearer $(LEO_SECRET_HF_TOKEN)"
    );
    assert_eq!(env(&job, "MODE")["value"], "exchange");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"], "/runs/r1",
        "{container}"
    );
    assert_valid(
        &validator,
        &sb.path().join("tiny.yaml"),
        "tiny-ranks-train-ring",
    );

    // The validator is not vacuous: a wrong type and, under --strict, an unknown field fail.
    let wrong_type = sb.write(
        "wrong-type.yaml",
        replace_once(&text, "\n  completions: 4\n", "\n  completions: four\n"),
    );
    assert_invalid(
        &validator,
        &wrong_type,
        "spec.completions: 'four' is not of type 'integer'",
    );
    let unknown_field = sb.write(
        "unknown-field.yaml",
        replace_once(
            &text,
            "\n  parallelism: 4\n",
            "\n  parallelism: 4\n  paralelism: 4\n",
        ),
    );
    assert_invalid(&validator, &unknown_field, "'paralelism' was unexpected");
}

#[test]
fn an_unknown_stage_is_refused_with_the_stages_listed() {
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let workflow = sb.write(
        "w.toml",
        "[workflow]\nname = \"w\"\n[stages.a]\nplugin = \"shell\"\nparams = { run = \"true\" }\n\
         [stages.b]\nplugin = \"shell\"\nneeds = [\"a\"]\nparams = { run = \"true\" }\n",
    );
    let out = sb.leo(&["export", "k8s", workflow.to_str().unwrap(), "c"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no stage `c` in workflow `w`; its stages are: a, b"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // Ranks cannot share a GPU across pods.
    let uneven = sb.write(
        "uneven.toml",
        "[workflow]\nname = \"w\"\n[stages.a]\nplugin = \"shell\"\nparams = { run = \"true\" }\n\
         resources = { gpus = 1, world_size = 2 }\n",
    );
    let out = sb.leo(&["export", "k8s", uneven.to_str().unwrap(), "a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("gpus = 1 is not a multiple of world_size = 2"),
        "{stderr}"
    );
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` once in:\n{text}");
    text.replacen(from, to, 1)
}
