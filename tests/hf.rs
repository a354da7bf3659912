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

fn ok(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "leo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let plan = ok(&args, leo_with_hub(&sb, &hub, &cache, &args));
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
    ok(&args, leo_with_hub(&sb, &hub, &cache, &args));
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
    let plan = ok(&args, leo_with_hub(&sb, &hub, &cache, &args));
    assert!(plan.contains("cached"), "{plan}");
    assert_eq!(fetched(&hub), before);

    let args = ["lineage", &out];
    let lineage = ok(&args, leo_with_hub(&sb, &hub, &cache, &args));
    assert!(
        lineage.contains(&format!("hf://datasets/LeoLM/tiny-de@{commit}/de")),
        "{lineage}"
    );
}
