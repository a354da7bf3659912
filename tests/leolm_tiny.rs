//! `workflows/leolm-tiny.toml`, the demo, end to end: every stage of the LeoLM recipe in
//! miniature, and the LeoLM effect it exists to show. After stage 2 (the English base model
//! continued on German), German held-out text must be clearly more predictable — at least 0.5
//! bits per byte better, and at least a quarter of the base model's German bits per byte gone —
//! while English gets worse by less than German got better. The chat model's lineage must
//! reach the shipped text files with every stage's params.
//!
//! The training steps are cut (as `leo run --var` would; the test rewrites the copy) so the test
//! takes a few minutes; `just demo` runs the file as it is. Needs `leo-torch` beside `leo`.

use std::collections::{BTreeMap, BTreeSet};

use leo_e2e::*;
use serde_json::Value;

/// The shipped workflow, its data where it lies in the repository, and fewer steps.
fn workflow_text() -> String {
    let path = repo_root().join("workflows/leolm-tiny.toml");
    let text = std::fs::read_to_string(&path).expect("workflows/leolm-tiny.toml");
    let data = repo_root().join("workflows/data/leolm-tiny");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.split_once(" = ").map(|(k, _)| k) {
            Some("data") => format!("data = {:?}", data.display().to_string()),
            Some("base_steps") => "base_steps = 120".to_string(),
            Some("stage2_steps") => "stage2_steps = 100".to_string(),
            Some("sft_steps") => "sft_steps = 20".to_string(),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    for var in [
        "data = ",
        "base_steps = 120",
        "stage2_steps = 100",
        "sft_steps = 20",
    ] {
        assert!(
            out.contains(var),
            "the workflow has no `{var}` variable any more"
        );
    }
    out
}

fn metric(status: &Value, stage_name: &str, name: &str) -> f64 {
    stage(status, stage_name)["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("stage {stage_name} has no metric {name}"))
}

/// Every stage (with its params) and every external URI in a lineage tree.
fn walk(node: &Value, stages: &mut BTreeMap<String, Value>, uris: &mut BTreeSet<String>) {
    if let Some(uri) = node["uri"].as_str() {
        uris.insert(uri.to_string());
    }
    let produced = &node["produced_by"];
    if let Some(name) = produced["stage"].as_str() {
        stages.insert(name.to_string(), produced["code"]["params"].clone());
    }
    for child in node["inputs"].as_array().into_iter().flatten() {
        walk(child, stages, uris);
    }
}

#[test]
fn the_tiny_leolm_workflow_shows_the_leolm_effect_and_traces_its_chat_model_to_the_shipped_text() {
    assert!(
        leo_bin().with_file_name("leo-torch").exists(),
        "leo-torch is missing: build the workspace first (cargo build --workspace)"
    );
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    sb.write("leolm-tiny.toml", workflow_text());
    sb.leo_ok(&["validate", "leolm-tiny.toml"]);
    sb.leo_ok(&["run", "leolm-tiny.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    for s in status["stages"].as_array().expect("stages") {
        assert_eq!(s["status"], "succeeded", "{s}");
    }

    // The LeoLM effect, in bits per byte of the held-out books (lower is better).
    let bpb = |stage: &str, lang: &str| {
        metric(&status, stage, &format!("perplexity_{lang}/bits_per_byte"))
    };
    let (de_before, de_after) = (bpb("eval_base", "de"), bpb("eval_stage2", "de"));
    let (en_before, en_after) = (bpb("eval_base", "en"), bpb("eval_stage2", "en"));
    let german_gain = de_before - de_after;
    let english_loss = en_after - en_before;
    eprintln!(
        "German {de_before:.3} -> {de_after:.3} bits/byte, English {en_before:.3} -> {en_after:.3}"
    );
    assert!(
        german_gain >= 0.5 && german_gain >= 0.25 * de_before,
        "stage 2 did not make German clearly better: {de_before:.3} -> {de_after:.3} bits/byte"
    );
    assert!(
        english_loss < german_gain,
        "English got worse by {english_loss:.3} bits/byte, more than German improved ({german_gain:.3})"
    );
    // The base model knows English better than German; stage 2 reverses that.
    assert!(
        en_before < de_before,
        "base: en {en_before} vs de {de_before}"
    );
    assert!(de_after < de_before && en_after > en_before - 0.05);
    // Every eval stage scored both cloze tasks (chance is 0.25; tiny models stay near it).
    for eval in ["eval_base", "eval_stage2", "eval_chat"] {
        for lang in ["de", "en"] {
            let acc = metric(&status, eval, &format!("bible_cloze_{lang}/acc"));
            assert!(
                (0.0..=1.0).contains(&acc),
                "{eval} bible_cloze_{lang}/acc = {acc}"
            );
        }
    }

    // Stage 2 doubled the context with linear RoPE scaling, as LeoLM did.
    let stage2 = artifact_files(&sb, &output_digest(&status, "stage2", "model"));
    let config = stage2
        .as_object()
        .and_then(|f| f.iter().find(|(p, _)| p.ends_with("config.json")))
        .and_then(|(_, v)| v.as_str())
        .map(|t| serde_json::from_str::<Value>(t).expect("config.json"))
        .expect("stage2's config.json");
    assert_eq!(config["max_position_embeddings"], 512, "{config}");
    assert_eq!(config["rope_scaling"]["factor"], 2.0, "{config}");

    // The report stage's page: a loss chart per training stage, German vs English, the eval
    // table, the lineage graph down to the shipped files.
    let report = artifact_files(&sb, &output_digest(&status, "report", "report"));
    let html = report
        .as_object()
        .and_then(|f| f.iter().find(|(p, _)| p.ends_with("report.html")))
        .and_then(|(_, v)| v.as_str())
        .expect("report.html")
        .to_string();
    for needed in [
        "German vs English",
        "bible_cloze_de",
        "perplexity_en",
        "stage2",
        "elberfelder-1905.txt",
    ] {
        assert!(html.contains(needed), "the report lacks {needed}");
    }
    assert!(
        html.matches("<svg").count() >= 5,
        "too few charts in the report"
    );

    // The chat model's lineage: every stage back to the shipped files, with its params.
    let chat = output_digest(&status, "sft", "model");
    let lineage = sb.leo_json(&["lineage", &chat, "--json"]);
    let (mut stages, mut uris) = (BTreeMap::new(), BTreeSet::new());
    walk(&lineage, &mut stages, &mut uris);
    let expected = [
        "sft",
        "stage2",
        "base",
        "tokens_de",
        "tokens_en",
        "tokenizer",
        "corpus_de",
        "corpus_en",
    ];
    assert_eq!(
        stages.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.into_iter().collect(),
        "{lineage}"
    );
    for (name, params) in &stages {
        assert!(
            params.as_object().is_some_and(|p| !p.is_empty()),
            "stage {name} has no params in the lineage: {params}"
        );
    }
    assert_eq!(stages["stage2"]["rope_scaling"]["factor"], 2.0);
    for file in [
        "de/elberfelder-1905.txt",
        "de/germandpr-passages.txt",
        "en/world-english-bible.txt",
        "sft/germandpr-instruct.jsonl",
    ] {
        assert!(
            uris.iter()
                .any(|u| u.starts_with("file://") && u.ends_with(file)),
            "the lineage does not reach {file}: {uris:?}"
        );
    }
    let tree = sb.leo_ok(&["lineage", &chat]);
    assert!(tree.contains("elberfelder-1905.txt"), "{tree}");
}
