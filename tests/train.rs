//! Training stages through `leo run`: a tiny Llama pretrained on German passages tokenized by
//! the tokenize stage. It overfits one batch; a run killed after its second checkpoint resumes
//! and repeats the uninterrupted run's losses exactly; two data-parallel ranks end where one
//! rank ends with the same global batch, each holding half of the optimizer state.
//!
//! Needs `leo-torch` beside `leo` (`cargo build --workspace`, which `just test` runs first).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use leo_e2e::*;

/// The tiny training workflow of this file, run by the local executor.
fn workflow(sb: &Sandbox, params: &str, resources: &str) {
    training_workflow(sb, params, resources, "");
}

fn losses(sb: &Sandbox, run: &str) -> BTreeMap<u64, String> {
    pretrain_losses(sb, run)
}

#[test]
fn a_tiny_model_overfits_one_batch() {
    // Storage plays no part here: local storage only (the kill test runs on both).
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    workflow(
        &sb,
        "micro_batch = 4, global_batch = 4, train_rows = 4, steps = 60, lr = 1e-2, min_lr = 1e-2, weight_decay = 0.0",
        "cpus = 1",
    );
    sb.leo_ok(&["run", "train.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    let metrics = &stage(&status, "pretrain")["metrics"];
    let loss = metrics["loss"].as_f64().expect("loss metric");
    assert!(loss < 0.05, "final loss {loss}: {metrics}");
    let losses = losses(&sb, &sb.latest_run());
    assert_eq!(losses.len(), 60);
    let first: f64 = losses[&1].parse().expect("loss");
    assert!(
        first > 9.0,
        "a fresh model starts near ln(32000) ≈ 10.4, got {first}"
    );
    // The output is an HF checkpoint with the tokenizer beside the weights.
    let model = output_digest(&status, "pretrain", "model");
    let files = artifact_paths(&sb, &model);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(files.contains(&f.to_string()), "{f} not in {files:?}");
    }
}

#[test]
fn an_sft_stage_chat_tunes_the_pretrained_model() {
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    workflow(
        &sb,
        "micro_batch = 2, steps = 4, lr = 3e-3, max_position_embeddings = 512, rope_scaling = { type = \"linear\", factor = 2.0 }",
        "cpus = 1",
    );
    let sft_data = shared_data().join("demo/sft/germandpr-instruct.jsonl");
    let mut toml = std::fs::read_to_string(sb.path().join("train.toml")).expect("workflow");
    toml.push_str(&format!(
        r#"
[stages.sft]
plugin = "sft"
inputs = {{ model = "pretrain.model", germandpr = "file://{data}" }}
# A seeded 2% of the 2,050 conversations, one epoch of 512-token rows.
params = {{ datasets = [{{ input = "germandpr", weight = 0.02 }}], seq_len = 512, epochs = 1, micro_batch = 2, global_batch = 4, lr = 1e-3, min_lr = 0.0, threads = 1, validation_fraction = 0.05 }}
"#,
        data = sft_data.display()
    ));
    sb.write("train.toml", toml);
    sb.leo_ok(&["run", "train.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    let metrics = &stage(&status, "sft")["metrics"];
    assert!(
        metrics["loss"].as_f64().is_some() && metrics["val_loss"].as_f64().is_some(),
        "{metrics}"
    );
    let files = artifact_files(&sb, &output_digest(&status, "sft", "model"));
    let config: serde_json::Value = serde_json::from_str(
        files["tokenizer_config.json"]
            .as_str()
            .expect("tokenizer_config.json"),
    )
    .expect("json");
    assert!(
        config["chat_template"]
            .as_str()
            .is_some_and(|t| t.contains("<|im_start|>")),
        "{config}"
    );
    assert_eq!(config["eos_token"], "<|im_end|>");
    let log = sb.leo_ok(&["logs", "latest", "sft"]);
    assert!(log.contains("added 2 ChatML token(s)"), "{log}");
}

#[test]
fn a_killed_or_stopped_pretrain_stage_resumes_from_its_checkpoint_with_identical_losses() {
    let params = "micro_batch = 2, global_batch = 4, steps = 100, lr = 3e-3, min_lr = 3e-4, warmup_steps = 10, checkpoint_every = 10";
    let reference = Sandbox::new();
    workflow(&reference, params, "cpus = 1");
    reference.leo_ok(&["run", "train.toml"]);
    let expected = losses(&reference, &reference.latest_run());
    assert_eq!(expected.len(), 100);

    let sb = Sandbox::new();
    workflow(&sb, params, "cpus = 1");
    let mut leo = sb.spawn(&["run", "train.toml"], "run");
    wait_until(
        "the pretrain stage's second checkpoint",
        Duration::from_secs(300),
        || {
            sb.leo(&["status", "--json"]).status.success()
                && stage(&sb.status(None), "pretrain")["checkpoints"]
                    .as_array()
                    .is_some_and(|c| c.len() >= 2)
        },
    );
    // SIGKILL the engine; the worker dies with it.
    sigkill(&mut leo);
    let run = sb.latest_run();
    let killed = sb.status(Some(&run));
    assert_ne!(
        killed["run"]["status"], "succeeded",
        "finished before the kill"
    );
    let saved = stage(&killed, "pretrain")["checkpoints"]
        .as_array()
        .map_or(0, Vec::len);
    assert!((2..10).contains(&saved), "{saved} checkpoints");

    sb.leo_ok(&["resume", &run]);
    let resumed = sb.status(Some(&run));
    assert_eq!(resumed["run"]["status"], "succeeded", "{resumed}");
    let log = sb.leo_ok(&["logs", &run, "pretrain"]);
    assert!(log.contains("resuming from"), "{log}");
    assert_eq!(losses(&sb, &run), expected);
    let model = output_digest(&reference.status(None), "pretrain", "model");
    assert_eq!(
        output_digest(&resumed, "pretrain", "model"),
        model,
        "the resumed run's model differs from the uninterrupted run's"
    );

    // SIGTERM (what a timeout or a cancel sends first): the worker finishes its update, saves a
    // checkpoint, exits; the retry continues from that checkpoint.
    let sb = Sandbox::new();
    workflow(&sb, params, "cpus = 1");
    let toml = std::fs::read_to_string(sb.path().join("train.toml")).expect("workflow");
    sb.write(
        "train.toml",
        toml.replace("[stages.pretrain]\n", "[stages.pretrain]\nretries = 1\n"),
    );
    let mut leo = sb.spawn(&["run", "train.toml"], "run");
    wait_until(
        "the pretrain stage's first checkpoint",
        Duration::from_secs(300),
        || {
            sb.leo(&["status", "--json"]).status.success()
                && stage(&sb.status(None), "pretrain")["checkpoints"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
        },
    );
    let run = sb.latest_run();
    let workers = processes_of_run(&run);
    assert!(!workers.is_empty(), "no worker process of run {run}");
    for pid in &workers {
        // SAFETY: signalling the worker process the engine started for this run.
        unsafe {
            libc::kill(pid.parse().expect("pid"), libc::SIGTERM);
        }
    }
    let done = leo.wait().expect("leo run");
    assert!(done.success(), "leo run failed after the retry");
    let status = sb.status(Some(&run));
    let attempts = stage(&status, "pretrain")["attempt_list"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(attempts, 2, "{status}");
    let first = sb.leo_ok(&["logs", &run, "pretrain", "--attempt", "1"]);
    assert!(
        first.contains("stopped by SIGTERM; checkpoint saved at step"),
        "{first}"
    );
    let second = sb.leo_ok(&["logs", &run, "pretrain", "--attempt", "2"]);
    assert!(second.contains("resuming from"), "{second}");
    assert_eq!(losses(&sb, &run), expected);
    assert_eq!(output_digest(&status, "pretrain", "model"), model);
}

#[test]
fn two_ranks_train_the_same_model_as_one_with_half_the_optimizer_state_each() {
    let params = "micro_batch = 1, global_batch = 4, steps = 10, lr = 3e-3, min_lr = 3e-4, checkpoint_every = 5";
    let Some(one) = Sandbox::local_pass_only() else {
        return;
    };
    workflow(&one, params, "cpus = 1");
    one.leo_ok(&["run", "train.toml"]);
    let two = Sandbox::local();
    workflow(&two, params, "cpus = 2, world_size = 2");
    two.leo_ok(&["run", "train.toml"]);

    let (s1, s2) = (one.status(None), two.status(None));
    assert_eq!(s2["run"]["status"], "succeeded", "{s2}");
    let w1 = safetensors_f32(&one, &output_digest(&s1, "pretrain", "model"));
    let w2 = safetensors_f32(&two, &output_digest(&s2, "pretrain", "model"));
    assert_eq!(w1.keys().collect::<Vec<_>>(), w2.keys().collect::<Vec<_>>());
    for (name, a) in &w1 {
        let b = &w2[name];
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name}: max difference {diff}");
    }
    // Ranks logged under their number; the checkpoint holds one optimizer shard per rank,
    // each half of the parameters' moments.
    let log = two.leo_ok(&["logs", "latest", "pretrain"]);
    assert!(log.contains("2 rank(s)"), "{log}");
    let ckpt = stage(&s2, "pretrain")["checkpoints"][0]["digest"]
        .as_str()
        .expect("checkpoint digest")
        .to_string();
    let files = artifact_sizes(&two, &ckpt);
    let params: usize = w1.values().map(Vec::len).sum();
    for rank in 0..2 {
        let name = format!("optimizer/rank-{rank:05}-of-00002.safetensors");
        let size = files
            .get(&name)
            .copied()
            .unwrap_or_else(|| panic!("{name} in {files:?}"));
        // Two moments of half the parameters in f32, plus a small header.
        let moments = 2 * 4 * params.div_ceil(2) as u64;
        assert!(
            size >= moments && size < moments + 1024,
            "{name}: {size} bytes"
        );
    }
}

/// Paths of an artifact's files.
fn artifact_paths(sb: &Sandbox, digest: &str) -> Vec<String> {
    artifact_sizes(sb, digest).into_keys().collect()
}

fn manifest(sb: &Sandbox, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let path = sb.store_root().join(format!("manifests/sha256/{hex}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("manifest JSON")
}

fn blob(sb: &Sandbox, sha: &str) -> PathBuf {
    sb.store_root()
        .join(format!("blobs/sha256/{}/{sha}", &sha[..2]))
}

/// `{path: size}` of an artifact's files.
fn artifact_sizes(sb: &Sandbox, digest: &str) -> BTreeMap<String, u64> {
    manifest(sb, digest)["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let path = f["path"].as_str().expect("path").to_string();
            let len = std::fs::metadata(blob(sb, f["sha256"].as_str().expect("sha")))
                .map_or(0, |m| m.len());
            (path, len)
        })
        .collect()
}

/// The f32 tensors of an artifact's `model.safetensors`, by name.
fn safetensors_f32(sb: &Sandbox, digest: &str) -> BTreeMap<String, Vec<f32>> {
    let m = manifest(sb, digest);
    let file = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .expect("model.safetensors in the artifact");
    let bytes = std::fs::read(blob(sb, file["sha256"].as_str().expect("sha"))).expect("blob");
    read_f32_safetensors(&bytes)
}

/// A minimal safetensors reader (8-byte header length, JSON header, data) for F32 tensors.
fn read_f32_safetensors(bytes: &[u8]) -> BTreeMap<String, Vec<f32>> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, t) in header.as_object().expect("header object") {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(t["dtype"], "F32", "{name}");
        let (a, b) = (
            t["data_offsets"][0].as_u64().expect("offset") as usize,
            t["data_offsets"][1].as_u64().expect("offset") as usize,
        );
        let values = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.insert(name.clone(), values);
    }
    out
}
