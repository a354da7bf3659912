//! `leo export k8s WORKFLOW STAGE`: one stage of a workflow as Kubernetes objects for
//! `kubectl apply -f` (docs/kubernetes.md): a headless Service, then an indexed Job with one pod
//! per rank, each running `leo worker-rank` on the stage's invocation template. Nothing is run
//! and no cluster is contacted; the rendering is pure ([`manifests`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use leo_spec::{PluginRef, Stage};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::catalog;

/// The image when `--image` is not given: leo's own, of this version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/leo/leo:", env!("CARGO_PKG_VERSION"));
/// The port rank 0 listens on for the others (`MASTER_PORT`), declared by the Service.
pub const RENDEZVOUS_PORT: u16 = 29500;
/// The Kubernetes Secret that `${secret.NAME}` values are read from (key NAME).
pub const SECRET_NAME: &str = "leo-secrets";
/// The annotation an indexed Job puts on each pod: its completion index, the rank.
const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// A DNS-1123 label's longest length (Job, Service, pod host names).
const MAX_LABEL: usize = 63;

#[derive(clap::Subcommand, Debug)]
pub enum ExportCommand {
    /// A stage as a Kubernetes indexed Job (batch/v1, one pod per rank of `world_size`) and the
    /// headless Service its ranks rendezvous through, as YAML for `kubectl apply -f`. The pods
    /// run `leo worker-rank WORK_DIR/invocation.json -- PLUGIN COMMAND`: the image must contain
    /// `leo` and `leo-torch` (and any `exec:` plugin the stage names), and the claim must hold
    /// the run's work folder with the stage's invocation and inputs (docs/kubernetes.md).
    K8s(K8sArgs),
}

#[derive(clap::Args, Debug)]
pub struct K8sArgs {
    /// The workflow file.
    pub workflow: PathBuf,
    /// The stage to export.
    pub stage: String,
    /// Container image for the pods; it must contain `leo` and `leo-torch` on PATH.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Namespace of the Job and Service (default: kubectl's current one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// PersistentVolumeClaim holding the run's work folder (invocation and inputs).
    #[arg(long, default_value = "leo-work")]
    pub work_claim: String,
    /// Where the claim is mounted in each pod; the pods read WORK_DIR/invocation.json.
    #[arg(long, default_value = "/leo/work")]
    pub work_dir: String,
    /// Write the YAML to FILE instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// What the pods are made of, beside the stage.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    pub image: String,
    pub namespace: Option<String>,
    pub work_claim: String,
    pub work_dir: String,
}

pub fn export(command: ExportCommand) -> Result<ExitCode> {
    match command {
        ExportCommand::K8s(args) => k8s(args),
    }
}

fn k8s(args: K8sArgs) -> Result<ExitCode> {
    // The path `leo validate` takes: load (vars substituted, the DAG checked), then every
    // stage's params through its plugin.
    let loaded = leo_spec::load_file(&args.workflow)?;
    if !loaded.workflow.stages.contains_key(&args.stage) {
        let names: Vec<&str> = loaded.workflow.stages.keys().map(String::as_str).collect();
        eprintln!(
            "error: {}: no stage `{}` in workflow `{}`; its stages are: {}",
            args.workflow.display(),
            args.stage,
            loaded.workflow.name,
            names.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let catalog = catalog()?;
    let checked = leo_engine::check(&loaded, &catalog)?;
    let stage = &checked.workflow.stages[&args.stage];
    let mut command = catalog.portable_command(&stage.plugin);
    if let PluginRef::Exec(path) = &stage.plugin {
        command[0] = exec_as_written(path, &args.workflow);
    }
    let options = K8sOptions {
        image: args.image,
        namespace: args.namespace,
        work_claim: args.work_claim,
        work_dir: args.work_dir,
    };
    let yaml = render(&checked.workflow.name, stage, &command, &options)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(yaml.as_bytes())
            .context("writing the manifest to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// An `exec:` plugin's path as the workflow file wrote it: the loader resolves a relative path
/// against the workflow's folder on this machine, which the pods do not share.
fn exec_as_written(resolved: &str, workflow: &Path) -> String {
    let dir = workflow
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .and_then(|p| std::fs::canonicalize(p).ok());
    dir.and_then(|d| {
        Path::new(resolved)
            .strip_prefix(d)
            .ok()
            .map(|rel| rel.display().to_string())
    })
    .unwrap_or_else(|| resolved.to_string())
}

/// The manifest as YAML: a comment saying what it is, then one document per object.
pub fn render(
    workflow: &str,
    stage: &Stage,
    command: &[String],
    options: &K8sOptions,
) -> Result<String> {
    let mut out = format!(
        "# leo export k8s: stage `{}` of workflow `{workflow}` (leo {}); kubectl apply -f FILE\n",
        stage.name,
        env!("CARGO_PKG_VERSION")
    );
    for object in manifests(workflow, stage, command, options)? {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&object).context("writing YAML")?);
    }
    Ok(out)
}

/// The headless Service and the indexed Job for `stage`, whose plugin runs as `command`
/// (program names, [`leo_engine::Catalog::portable_command`]).
pub fn manifests(
    workflow: &str,
    stage: &Stage,
    command: &[String],
    options: &K8sOptions,
) -> Result<Vec<Value>> {
    check_options(options)?;
    let resources = &stage.resources;
    let world_size = resources.world_size.max(1);
    if !resources.gpus.is_multiple_of(world_size) {
        bail!(
            "stage `{}`: gpus = {} is not a multiple of world_size = {}; each pod (one rank) \
             gets gpus / world_size GPUs",
            stage.name,
            resources.gpus,
            world_size
        );
    }
    let base = format!("{workflow}-{}", stage.name);
    // Pod host names are JOB-INDEX: leave room for the largest index.
    let index_digits = (world_size - 1).to_string().len();
    let job = dns_label(&base, MAX_LABEL - 1 - index_digits);
    let service = dns_label(&base, MAX_LABEL);
    let master_addr = format!("{job}-0.{service}");

    let labels = json!({
        "app.kubernetes.io/name": "leo",
        "leo.dev/workflow": label_value(workflow),
        "leo.dev/stage": label_value(&stage.name),
    });
    let metadata = |name: &str| {
        let mut m = json!({ "name": name, "labels": labels });
        if let Some(ns) = &options.namespace {
            m["namespace"] = json!(ns);
        }
        m
    };

    let service_object = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(&service),
        "spec": {
            "clusterIP": "None",
            // Rank 0's name resolves before it is ready: the ranks meet while starting.
            "publishNotReadyAddresses": true,
            "selector": { "job-name": job },
            "ports": [{
                "name": "rendezvous",
                "port": RENDEZVOUS_PORT,
                "targetPort": RENDEZVOUS_PORT,
                "protocol": "TCP",
            }],
        },
    });

    let mut argv = vec![
        "leo".to_string(),
        "worker-rank".to_string(),
        format!("{}/invocation.json", options.work_dir.trim_end_matches('/')),
        "--".to_string(),
    ];
    argv.extend(command.iter().cloned());

    let mut quantities = serde_json::Map::new();
    quantities.insert("cpu".into(), json!(cpu_per_pod(resources.cpus, world_size)));
    if let Some(bytes) = resources.memory {
        quantities.insert(
            "memory".into(),
            json!(memory_quantity(bytes / u64::from(world_size))),
        );
    }
    if resources.gpus > 0 {
        quantities.insert(
            "nvidia.com/gpu".into(),
            json!((resources.gpus / world_size).to_string()),
        );
    }
    let quantities = Value::Object(quantities);

    let container = json!({
        "name": "rank",
        "image": options.image,
        "command": argv,
        "workingDir": options.work_dir,
        "env": env_vars(stage, world_size, &master_addr)?,
        "ports": [{ "name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP" }],
        "resources": { "requests": quantities, "limits": quantities },
        "volumeMounts": [
            { "name": "work", "mountPath": options.work_dir },
            { "name": "dshm", "mountPath": "/dev/shm" },
        ],
    });

    let mut spec = json!({
        "completionMode": "Indexed",
        "completions": world_size,
        "parallelism": world_size,
        // A failed attempt of a multi-rank stage may fail every rank (the others lose their
        // peer): each retry of the stage is worth world_size pod failures.
        "backoffLimit": stage.retries.saturating_mul(world_size),
        // Evictions, preemption and node drains are not the stage's failures.
        "podFailurePolicy": {
            "rules": [{
                "action": "Ignore",
                "onPodConditions": [{ "type": "DisruptionTarget", "status": "True" }],
            }],
        },
        "template": {
            "metadata": { "labels": labels },
            "spec": {
                "restartPolicy": "Never",
                "subdomain": service,
                "containers": [container],
                "volumes": [
                    {
                        "name": "work",
                        "persistentVolumeClaim": { "claimName": options.work_claim },
                    },
                    { "name": "dshm", "emptyDir": { "medium": "Memory" } },
                ],
            },
        },
    });
    if let Some(timeout) = stage.timeout {
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        spec["activeDeadlineSeconds"] = json!(seconds.max(1));
    }
    let job_object = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(&job),
        "spec": spec,
    });
    Ok(vec![service_object, job_object])
}

fn check_options(options: &K8sOptions) -> Result<()> {
    if options.image.trim().is_empty() || options.image.contains(char::is_whitespace) {
        bail!("--image `{}` is not an image reference", options.image);
    }
    if let Some(ns) = &options.namespace {
        if dns_label(ns, MAX_LABEL) != *ns {
            bail!(
                "--namespace `{ns}` is not a Kubernetes name (lowercase letters, digits and `-`, \
                 at most 63)"
            );
        }
    }
    let claim = &options.work_claim;
    let claim_ok = !claim.is_empty()
        && claim.len() <= 253
        && claim
            .split('.')
            .all(|part| dns_label(part, MAX_LABEL) == part);
    if !claim_ok {
        bail!(
            "--work-claim `{claim}` is not a Kubernetes name (lowercase letters, digits, `-` and `.`)"
        );
    }
    let dir = &options.work_dir;
    if !dir.starts_with('/') || dir.contains(':') || dir.trim_end_matches('/').is_empty() {
        bail!("--work-dir `{dir}` must be an absolute path other than / (and without `:`)");
    }
    if Path::new(dir) == Path::new("/dev/shm") {
        bail!("--work-dir cannot be /dev/shm (the ranks' shared memory is mounted there)");
    }
    Ok(())
}

/// The container's environment: leo's rank variables (also under torchrun's names), then the
/// stage's `env`, each `${secret.NAME}` read from the Secret [`SECRET_NAME`] (key NAME).
/// Variables leo sets win over the stage's, as in the engine.
fn env_vars(stage: &Stage, world_size: u32, master_addr: &str) -> Result<Vec<Value>> {
    let n = world_size.to_string();
    let rank = json!({ "fieldRef": { "fieldPath": format!("metadata.annotations['{INDEX_ANNOTATION}']") } });
    let mut env = vec![
        json!({ "name": "LEO_STAGE", "value": stage.name }),
        json!({ "name": "LEO_WORLD_SIZE", "value": n }),
        json!({ "name": "WORLD_SIZE", "value": n }),
        json!({ "name": "LEO_RANK", "valueFrom": rank }),
        json!({ "name": "RANK", "valueFrom": rank }),
        // One rank per pod: each sees only its own GPUs, and is local rank 0 among them.
        json!({ "name": "LOCAL_RANK", "value": "0" }),
        json!({ "name": "LOCAL_WORLD_SIZE", "value": "1" }),
        json!({ "name": "MASTER_ADDR", "value": master_addr }),
        json!({ "name": "MASTER_PORT", "value": RENDEZVOUS_PORT.to_string() }),
        json!({ "name": "LEO_RENDEZVOUS", "value": format!("{master_addr}:{RENDEZVOUS_PORT}") }),
    ];
    if stage.resources.gpus == 0 {
        // As the engine does: a stage that asked for no GPU must not see (and grab) any.
        env.push(json!({ "name": "CUDA_VISIBLE_DEVICES", "value": "" }));
    }
    let reserved: BTreeSet<String> = env
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .chain(std::iter::once("JOB_COMPLETION_INDEX".to_string()))
        .collect();

    let mut helpers = Vec::new();
    let mut helper_names = BTreeSet::new();
    let mut stage_env = Vec::new();
    for (key, value) in &stage.env {
        if reserved.contains(key) {
            continue;
        }
        let parts = parts(key, value)?;
        match parts.as_slice() {
            [] => stage_env.push(json!({ "name": key, "value": "" })),
            [Part::Text(text)] => {
                stage_env.push(json!({ "name": key, "value": escape_literal(text) }))
            }
            [Part::Secret(name)] => {
                stage_env.push(json!({ "name": key, "valueFrom": secret_ref(name) }))
            }
            mixed => {
                // Text around a secret: the secret in a variable of its own, referenced as
                // `$(VAR)`, which Kubernetes expands from variables defined earlier.
                let mut text = String::new();
                for part in mixed {
                    match part {
                        Part::Text(t) => text.push_str(&t.replace('$', "$$")),
                        Part::Secret(name) => {
                            let helper = format!("LEO_SECRET_{name}");
                            if helper_names.insert(helper.clone()) {
                                helpers
                                    .push(json!({ "name": helper, "valueFrom": secret_ref(name) }));
                            }
                            text.push_str(&format!("$({helper})"));
                        }
                    }
                }
                stage_env.push(json!({ "name": key, "value": text }));
            }
        }
    }
    env.extend(helpers);
    env.extend(stage_env);
    Ok(env)
}

fn secret_ref(name: &str) -> Value {
    json!({ "secretKeyRef": { "name": SECRET_NAME, "key": name } })
}

#[derive(Debug, PartialEq)]
enum Part<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// An env value split into text and `${secret.NAME}` references (as the engine reads them).
fn parts<'a>(key: &str, value: &'a str) -> Result<Vec<Part<'a>>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${secret.") {
        if start > 0 {
            out.push(Part::Text(&rest[..start]));
        }
        let after = &rest[start + "${secret.".len()..];
        let Some(end) = after.find('}') else {
            bail!("env {key}: unclosed `${{secret.`");
        };
        out.push(Part::Secret(&after[..end]));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest));
    }
    Ok(out)
}

/// A literal env value as Kubernetes reads it: `$(VAR)` would be expanded and `$$` halved, so
/// a value holding either has every `$` doubled.
fn escape_literal(text: &str) -> String {
    if text.contains("$(") || text.contains("$$") {
        text.replace('$', "$$")
    } else {
        text.to_string()
    }
}

/// CPUs per pod: the stage's divided among its ranks, at least one; millicores when uneven.
fn cpu_per_pod(cpus: u32, world_size: u32) -> String {
    let milli = (u64::from(cpus) * 1000 / u64::from(world_size)).max(1000);
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Bytes as a Kubernetes quantity, in the largest binary unit that divides them.
fn memory_quantity(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// `text` as a DNS-1123 label that also starts with a letter (so it serves as a Service name,
/// RFC 1035): lowercase letters, digits and `-`, at most `max` characters. A name cut short
/// ends in 8 hex digits of the full text's SHA-256, so that distinct long names stay distinct.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut name = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name = name.trim_end_matches('-').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name = if name.is_empty() {
            "leo".to_string()
        } else {
            format!("leo-{name}")
        };
    }
    if name.len() > max {
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        let keep = max.saturating_sub(9);
        let head = name[..keep].trim_end_matches('-');
        name = format!("{head}-{}", &hash[..8]);
    }
    name
}

/// `text` as a label value: letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit, at most 63 characters.
fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = mapped.chars().take(MAX_LABEL).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_of(toml: &str, name: &str) -> (String, Stage) {
        let loaded = leo_spec::load_str(Path::new("/w/wf.toml"), toml.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let stage = loaded.workflow.stages[name].clone();
        (loaded.workflow.name, stage)
    }

    fn options() -> K8sOptions {
        K8sOptions {
            image: "registry.example/leo:1".into(),
            namespace: Some("ml".into()),
            work_claim: "leo-work".into(),
            work_dir: "/leo/work".into(),
        }
    }

    const PRETRAIN: &str = r#"
[workflow]
name = "LeoLM_13B"
[stages.pre_train]
plugin = "pretrain"
resources = { gpus = 8, world_size = 8, cpus = 64, memory = "512GiB" }
timeout = "70days"
retries = 10
env = { OPENAI_API_KEY = "${secret.OPENAI_API_KEY}", AUTH = "Bearer ${secret.TOKEN} $(x)", PLAIN = "a$(b)", LEO_STAGE = "mine" }
"#;

    fn env_of(job: &Value) -> Vec<Value> {
        job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn var<'a>(env: &'a [Value], name: &str) -> &'a Value {
        let found: Vec<&Value> = env.iter().filter(|v| v["name"] == name).collect();
        assert_eq!(found.len(), 1, "{name} in {env:?}");
        found[0]
    }

    #[test]
    fn a_multi_rank_stage_is_an_indexed_job_of_one_pod_per_rank() {
        let (wf, stage) = stage_of(PRETRAIN, "pre_train");
        let cmd: Vec<String> = ["leo-torch", "worker", "pretrain"]
            .map(String::from)
            .to_vec();
        let objects = manifests(&wf, &stage, &cmd, &options()).unwrap();
        let [service, job] = objects.as_slice() else {
            panic!("{objects:?}")
        };
        assert_eq!(service["kind"], "Service");
        assert_eq!(service["metadata"]["name"], "leolm-13b-pre-train");
        assert_eq!(service["metadata"]["namespace"], "ml");
        assert_eq!(service["spec"]["clusterIP"], "None");
        assert_eq!(
            service["spec"]["selector"]["job-name"],
            "leolm-13b-pre-train"
        );
        assert_eq!(service["spec"]["ports"][0]["port"], 29500);

        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["metadata"]["name"], "leolm-13b-pre-train");
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["leo.dev/workflow"], "LeoLM_13B");
        assert_eq!(labels["leo.dev/stage"], "pre_train");
        assert_eq!(labels["app.kubernetes.io/name"], "leo");
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(spec["completions"], 8);
        assert_eq!(spec["parallelism"], 8);
        assert_eq!(spec["backoffLimit"], 80);
        assert_eq!(spec["activeDeadlineSeconds"], 70 * 86_400);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["subdomain"], "leolm-13b-pre-train");
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "leo-work"
        );
        assert_eq!(pod["volumes"][1]["emptyDir"]["medium"], "Memory");
        let container = &pod["containers"][0];
        assert_eq!(
            container["command"],
            json!([
                "leo",
                "worker-rank",
                "/leo/work/invocation.json",
                "--",
                "leo-torch",
                "worker",
                "pretrain"
            ])
        );
        let want = json!({ "cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1" });
        assert_eq!(container["resources"]["requests"], want);
        assert_eq!(container["resources"]["limits"], want);
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/leo/work");
        assert_eq!(container["volumeMounts"][1]["mountPath"], "/dev/shm");
    }

    #[test]
    fn ranks_come_from_the_completion_index_and_secrets_from_a_secret() {
        let (wf, stage) = stage_of(PRETRAIN, "pre_train");
        let cmd = vec!["leo".to_string(), "worker".into(), "shell".into()];
        let job = &manifests(&wf, &stage, &cmd, &options()).unwrap()[1];
        let env = env_of(job);
        let index = json!({ "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        } });
        assert_eq!(var(&env, "RANK")["valueFrom"], index);
        assert_eq!(var(&env, "LEO_RANK")["valueFrom"], index);
        assert_eq!(var(&env, "WORLD_SIZE")["value"], "8");
        assert_eq!(var(&env, "LEO_WORLD_SIZE")["value"], "8");
        assert_eq!(var(&env, "LOCAL_RANK")["value"], "0");
        assert_eq!(
            var(&env, "MASTER_ADDR")["value"],
            "leolm-13b-pre-train-0.leolm-13b-pre-train"
        );
        assert_eq!(var(&env, "MASTER_PORT")["value"], "29500");
        // leo's own variables win over the stage's, as in the engine.
        assert_eq!(var(&env, "LEO_STAGE")["value"], "pre_train");
        // A whole-value secret is a secretKeyRef, never a literal.
        assert_eq!(
            var(&env, "OPENAI_API_KEY"),
            &json!({ "name": "OPENAI_API_KEY", "valueFrom": { "secretKeyRef": {
                "name": "leo-secrets", "key": "OPENAI_API_KEY" } } })
        );
        // Text around a secret: a variable of its own, expanded by Kubernetes; the text's `$`
        // doubled so that `$(x)` stays literal.
        assert_eq!(
            var(&env, "LEO_SECRET_TOKEN")["valueFrom"]["secretKeyRef"]["key"],
            "TOKEN"
        );
        assert_eq!(
            var(&env, "AUTH")["value"],
            "Bearer $(LEO_SECRET_TOKEN) $$(x)"
        );
        let helper_at = env.iter().position(|v| v["name"] == "LEO_SECRET_TOKEN");
        let auth_at = env.iter().position(|v| v["name"] == "AUTH");
        assert!(helper_at < auth_at, "{env:?}");
        assert_eq!(var(&env, "PLAIN")["value"], "a$$(b)");
        // No GPU-less stage here: CUDA_VISIBLE_DEVICES is left to the device plugin.
        assert!(!env.iter().any(|v| v["name"] == "CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn a_stage_without_gpus_or_limits_gets_one_cpu_and_no_gpu() {
        let (wf, stage) = stage_of(
            "[workflow]\nname = \"w\"\n[stages.s]\nplugin = \"shell\"\nparams = { run = \"true\" }\n",
            "s",
        );
        let cmd = vec!["leo".to_string(), "worker".into(), "shell".into()];
        let objects = manifests(&wf, &stage, &cmd, &options()).unwrap();
        let job = &objects[1];
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert!(job["spec"].get("activeDeadlineSeconds").is_none());
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"], json!({ "cpu": "1" }));
        assert_eq!(var(&env_of(job), "CUDA_VISIBLE_DEVICES")["value"], "");
    }

    #[test]
    fn gpus_must_divide_among_the_ranks() {
        let (wf, stage) = stage_of(
            "[workflow]\nname = \"w\"\n[stages.s]\nplugin = \"shell\"\n\
             resources = { gpus = 3, world_size = 2 }\n",
            "s",
        );
        let err = manifests(&wf, &stage, &[], &options()).unwrap_err();
        assert!(
            err.to_string()
                .contains("gpus = 3 is not a multiple of world_size = 2"),
            "{err}"
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let (wf, stage) = stage_of(PRETRAIN, "pre_train");
        for (change, want) in [
            (
                (|o: &mut K8sOptions| o.namespace = Some("ML".into())) as fn(&mut K8sOptions),
                "--namespace",
            ),
            (|o| o.work_claim = "Work_Claim".into(), "--work-claim"),
            (|o| o.work_dir = "leo/work".into(), "--work-dir"),
            (|o| o.work_dir = "/dev/shm".into(), "--work-dir"),
            (|o| o.image = "two words".into(), "--image"),
        ] {
            let mut o = options();
            change(&mut o);
            let err = manifests(&wf, &stage, &[], &o).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_per_pod(64, 8), "8");
        assert_eq!(cpu_per_pod(1, 8), "1");
        assert_eq!(cpu_per_pod(6, 4), "1500m");
        assert_eq!(memory_quantity(64 << 30), "64Gi");
        assert_eq!(memory_quantity(2 << 40), "2Ti");
        assert_eq!(memory_quantity(1536 << 20), "1536Mi");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(dns_label("leolm-13b-pretrain", 63), "leolm-13b-pretrain");
        assert_eq!(dns_label("LeoLM_13B-eval_chat", 63), "leolm-13b-eval-chat");
        assert_eq!(dns_label("__a  b__", 63), "a-b");
        assert_eq!(dns_label("7b-sft", 63), "leo-7b-sft");
        assert_eq!(dns_label("äöü", 63), "leo");
        let long = "a".repeat(40) + "_" + &"b".repeat(40);
        let label = dns_label(&long, 61);
        assert_eq!(label.len(), 61, "{label}");
        assert!(label.starts_with(&"a".repeat(40)), "{label}");
        // Distinct long names stay distinct.
        assert_ne!(label, dns_label(&(long.clone() + "c"), 61));
        assert_eq!(label, dns_label(&long, 61), "deterministic");
        for name in [label.as_str(), "leo-7b-sft", "a-b"] {
            assert!(name.len() <= 63);
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
        assert_eq!(label_value("LeoLM 13B (de)"), "LeoLM-13B--de");
        assert_eq!(label_value("_stage_"), "stage");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn the_job_name_leaves_room_for_the_rank_in_pod_host_names() {
        let long = "w".repeat(70);
        let (wf, stage) = stage_of(
            &format!(
                "[workflow]\nname = \"{long}\"\n[stages.s]\nplugin = \"shell\"\n\
                 resources = {{ world_size = 16 }}\n"
            ),
            "s",
        );
        let objects = manifests(&wf, &stage, &[], &options()).unwrap();
        let job = objects[1]["metadata"]["name"].as_str().unwrap();
        let service = objects[0]["metadata"]["name"].as_str().unwrap();
        assert_eq!(job.len(), 63 - "-15".len());
        assert_eq!(service.len(), 63);
        assert_eq!(
            objects[1]["metadata"]["labels"]["leo.dev/workflow"],
            "w".repeat(63)
        );
    }

    #[test]
    fn env_values_split_into_text_and_secrets() {
        assert_eq!(parts("K", "").unwrap(), vec![]);
        assert_eq!(
            parts("K", "a${secret.X}b${secret.Y}").unwrap(),
            vec![
                Part::Text("a"),
                Part::Secret("X"),
                Part::Text("b"),
                Part::Secret("Y")
            ]
        );
        assert!(parts("K", "${secret.X").is_err());
        assert_eq!(escape_literal("$HOME/x"), "$HOME/x");
        assert_eq!(escape_literal("$(HOME)"), "$$(HOME)");
        assert_eq!(escape_literal("a$$b"), "a$$$$b");
    }

    #[test]
    fn the_yaml_is_two_documents_and_stable() {
        let (wf, stage) = stage_of(PRETRAIN, "pre_train");
        let cmd = vec!["leo".to_string(), "worker".into(), "shell".into()];
        let a = render(&wf, &stage, &cmd, &options()).unwrap();
        assert_eq!(a, render(&wf, &stage, &cmd, &options()).unwrap());
        assert_eq!(a.matches("\n---\n").count(), 2, "{a}");
        assert!(a.starts_with("# leo export k8s: stage `pre_train`"), "{a}");
        assert!(a.contains("kind: Service\n"), "{a}");
        assert!(a.contains("kind: Job\n"), "{a}");
        // Strings that look like numbers stay strings.
        assert!(
            a.contains("value: '8'") || a.contains("value: \"8\""),
            "{a}"
        );
    }
}
