//! An `hf://` input end to end, against a Hub on loopback (`HF_ENDPOINT`) with a cache in the
//! sandbox (`HF_HUB_CACHE`): `leo plan` says the dataset folder is not downloaded yet and
//! downloads nothing; `leo run` downloads it into huggingface_hub's layout and the shell stage
//! reads the files; the output's lineage names the input at its commit.

use std::path::Path;
use std::process::Output;

use leo_e2e::*;
use leo_testkit::{FakeHub, HubHost, HubRepo};

fn leo_with_hub(sb: &Sandbox, hub: &FakeHub, cache: &Path, args: &[&str]) -> Output {
    sb.cmd(args)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", sb.path().join("hf-home"))
        .env_remove("HF_TOKEN")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("run leo")
}

#[test]
fn an_hf_dataset_folder_is_planned_without_downloading_then_downloaded_read_and_recorded() {
    let sb = Sandbox::new();
    let a = "{\"text\": \"Guten Morgen\"}\n";
    let b = "{\"text\": \"Gute Nacht\"}\n".repeat(300);
    let repo = HubRepo::new("datasets", "LeoLM/tiny-de")
        .file("README.md", "# tiny\n")
        .file("de/a.jsonl", a)
        .lfs_file("de/b.jsonl", b.clone())
        .file("en/a.jsonl", "{\"text\": \"Good morning\"}\n");
    let commit = repo.commit.clone();
    let hub = FakeHub::start(vec![repo]).expect("a Hub on loopback");
    let cache = sb.path().join("hf-cache");
    sb.write(
        "hf.toml",
        "[workflow]\nname = \"hf\"\n[stages.read]\nplugin = \"shell\"\n\
         inputs = { data = \"hf://datasets/LeoLM/tiny-de/de\" }\n\
         params = { run = \"cd $LEO_INPUT_DATA && ls > $LEO_OUTPUT_OUT/files && cat a.jsonl b.jsonl > $LEO_OUTPUT_OUT/all.jsonl\", outputs = [\"out\"] }\n",
    );

    let args = ["plan", "hf.toml"];
    let plan = succeeded(&args, leo_with_hub(&sb, &hub, &cache, &args));
    assert!(
        plan.contains("input hf://datasets/LeoLM/tiny-de/de is not downloaded yet (2 files)"),
        "{plan}"
    );
    let fetched = |hub: &FakeHub| {
        hub.requests()
            .into_iter()
            .filter(|r| r.host == HubHost::Lfs || r.path.contains("/resolve/"))
            .count()
    };
    assert_eq!(fetched(&hub), 0, "leo plan requested files");
    assert!(!cache.join("datasets--LeoLM--tiny-de/snapshots").exists());

    let args = ["run", "hf.toml"];
    succeeded(&args, leo_with_hub(&sb, &hub, &cache, &args));
    let status = sb.status(None);
    let out = output_digest(&status, "read", "out");
    let files = artifact_files(&sb, &out);
    assert_eq!(files["files"], "a.jsonl\nb.jsonl\n", "{files}");
    assert_eq!(files["all.jsonl"], format!("{a}{b}").as_str());
    // huggingface_hub's layout: only the folder's files, linked into the snapshot.
    let snapshot = cache.join(format!("datasets--LeoLM--tiny-de/snapshots/{commit}"));
    assert_eq!(
        std::fs::read_to_string(snapshot.join("de/b.jsonl")).unwrap(),
        b
    );
    assert!(std::fs::symlink_metadata(snapshot.join("de/a.jsonl"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!snapshot.join("en").exists() && !snapshot.join("README.md").exists());

    // Planned again: cached, and still no file requested a second time.
    let before = fetched(&hub);
    let args = ["plan", "hf.toml"];
    let plan = succeeded(&args, leo_with_hub(&sb, &hub, &cache, &args));
    assert!(plan.contains("cached"), "{plan}");
    assert_eq!(fetched(&hub), before);

    let args = ["lineage", &out];
    let lineage = succeeded(&args, leo_with_hub(&sb, &hub, &cache, &args));
    assert!(
        lineage.contains(&format!("hf://datasets/LeoLM/tiny-de@{commit}/de")),
        "{lineage}"
    );
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn a_gated_model_needs_hf_token_which_ends_up_in_no_file_of_the_run() {
    const TOKEN: &str = "hf_e2eGatedTokenDoNotLeak";
    let sb = Sandbox::new();
    let repo = HubRepo::new("models", "meta-llama/Llama-tiny")
        .gated(TOKEN)
        .file("config.json", "{\"dim\": 8}\n")
        .lfs_file("model.safetensors", vec![7u8; 50_000]);
    let hub = FakeHub::start(vec![repo]).expect("a Hub on loopback");
    let cache = sb.path().join("hf-cache");
    sb.write(
        "gated.toml",
        "[workflow]\nname = \"gated\"\n[stages.read]\nplugin = \"shell\"\n\
         inputs = { model = \"hf://meta-llama/Llama-tiny\" }\n\
         params = { run = \"wc -c < $LEO_INPUT_MODEL/model.safetensors > $LEO_OUTPUT_OUT/size\", outputs = [\"out\"] }\n",
    );

    // Without a token the run fails and says what to do.
    let failed = leo_with_hub(&sb, &hub, &cache, &["run", "gated.toml"]);
    assert!(!failed.status.success());
    let said = format!(
        "{}{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr),
        sb.status(None)
    );
    let expected = format!(
        "hf://meta-llama/Llama-tiny is a gated repository: accept its conditions at {}/meta-llama/Llama-tiny (logged in), then set HF_TOKEN",
        hub.endpoint()
    );
    assert!(said.contains(&expected), "{said}");

    // With it, the run succeeds; the token went to the endpoint only and is in no file.
    let out = sb
        .cmd(&["run", "gated.toml"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HOME", sb.path().join("hf-home"))
        .env("HF_TOKEN", TOKEN)
        .output()
        .expect("run leo");
    succeeded(&["run", "gated.toml"], out);
    let size = artifact_files(&sb, &output_digest(&sb.status(None), "read", "out"));
    assert_eq!(size["size"].as_str().map(str::trim), Some("50000"));
    assert!(hub
        .requests()
        .iter()
        .filter(|r| r.host == HubHost::Lfs)
        .all(|r| r.authorization.is_none()));
    let leaks = files_holding(sb.path(), TOKEN.as_bytes());
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
    if let Some(dump) = sb.dump_state() {
        assert!(!dump.contains(TOKEN), "the token is in the state");
    }
    if team_storage() {
        let leaks = files_holding(&sb.store_root(), TOKEN.as_bytes());
        assert!(leaks.is_empty(), "the token is in {leaks:?}");
    }
}

#[test]
fn leo_plan_offline_or_without_a_reachable_hub_says_the_input_is_not_cached() {
    let sb = Sandbox::new();
    let cache = sb.path().join("hf-cache");
    sb.write(
        "hf.toml",
        "[workflow]\nname = \"hf\"\n[stages.read]\nplugin = \"shell\"\n\
         inputs = { data = \"hf://datasets/LeoLM/tiny-de@v1/de\" }\n\
         params = { run = \"ls $LEO_INPUT_DATA > $LEO_OUTPUT_OUT/files\", outputs = [\"out\"] }\n",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let endpoint = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let plan = |offline: bool| {
        let mut cmd = sb.cmd(&["plan", "hf.toml"]);
        cmd.env("HF_ENDPOINT", &endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env_remove("HF_TOKEN");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        } else {
            cmd.env_remove("HF_HUB_OFFLINE");
        }
        succeeded(&["plan", "hf.toml"], cmd.output().expect("run leo"))
    };
    let offline = plan(true);
    assert!(
        offline.contains("hf://datasets/LeoLM/tiny-de@v1/de is not cached")
            && offline.contains("HF_HUB_OFFLINE"),
        "{offline}"
    );
    let unreachable = plan(false);
    assert!(
        unreachable.contains("is not cached") && unreachable.contains("could not be reached"),
        "{unreachable}"
    );
}
