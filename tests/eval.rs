//! The eval stage through `leo run`, after a pretrain stage: GermanBench tasks (ARC-DE,
//! MMLU-DE's 57 subjects, TruthfulQA-DE) and held-out bits per byte in German and English on
//! the freshly trained model. Its scores are metrics (`leo status`), its outputs an lm-eval
//! results JSON and per-sample records, and the lineage of the results names the scores and
//! leads back through the model to the training text.
//!
//! Needs `leo-torch` beside `leo` (`cargo build --workspace`, which `just test` runs first).

use std::path::PathBuf;

use leo_e2e::*;
use serde_json::Value;

fn shared_data() -> PathBuf {
    let root = repo_root().join("../shared/data");
    for needed in [
        "demo/de/germandpr-passages.txt",
        "demo/en/world-english-bible.txt",
        "llama2-tokenizer/tokenizer.json",
        "germanbench-sample/mmlu_de/dev.jsonl",
    ] {
        assert!(
            root.join(needed).exists(),
            "this test needs ../shared/data/{needed} beside the repository"
        );
    }
    root
}

#[test]
fn an_eval_stage_scores_the_pretrained_model_into_status_results_and_lineage() {
    let data = shared_data();
    assert!(
        leo_bin().with_file_name("leo-torch").exists(),
        "leo-torch is missing: build the workspace first (cargo build --workspace)"
    );
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let passages =
        std::fs::read_to_string(data.join("demo/de/germandpr-passages.txt")).expect("passages");
    let lines: Vec<&str> = passages.lines().collect();
    let docs: String = lines[..80]
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{}\n", serde_json::json!({"id": i.to_string(), "text": l})))
        .collect();
    sb.write("docs.jsonl", docs);
    // Held out: passages the model never saw, and English text.
    sb.write("held-out-de.txt", lines[100..120].join("\n"));
    let bible =
        std::fs::read_to_string(data.join("demo/en/world-english-bible.txt")).expect("bible");
    // A book per line: 20 documents of five sentences of Exodus.
    let exodus = bible
        .lines()
        .find(|l| l.contains("Exodus"))
        .expect("Exodus");
    let sentences: Vec<&str> = exodus.split(". ").skip(1).take(100).collect();
    let english: Vec<String> = sentences.chunks(5).map(|c| c.join(". ")).collect();
    sb.write("held-out-en.txt", english.join("\n"));
    let gb = data.join("germanbench-sample");
    sb.write(
        "eval.toml",
        format!(
            r#"
[workflow]
name = "eval"

[stages.tokenize]
plugin = "tokenize"
inputs = {{ documents = "file://${{workflow.dir}}/docs.jsonl", tokenizer = "file://{tok}" }}
params = {{ validation_fraction = 0.1, seed = 1 }}

[stages.pretrain]
plugin = "pretrain"
inputs = {{ tokens = "tokenize.tokens", tokenizer = "file://{tok}" }}
resources = {{ cpus = 1 }}
params = {{ seq_len = 64, threads = 1, micro_batch = 4, steps = 10, lr = 3e-3, model = {{ vocab_size = 32000, hidden_size = 64, intermediate_size = 128, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 256 }} }}

[stages.eval]
plugin = "eval"
inputs = {{ model = "pretrain.model", arc_challenge_de = "file://{gb}/arc_challenge_de", mmlu_de = "file://{gb}/mmlu_de", truthfulqa_de = "file://{gb}/truthfulqa_de", held_out_de = "file://${{workflow.dir}}/held-out-de.txt", held_out_en = "file://${{workflow.dir}}/held-out-en.txt" }}
resources = {{ cpus = 1 }}
params.threads = 1
params.tasks = [
  {{ name = "arc_challenge_de", limit = 8 }},
  {{ name = "mmlu_de", limit = 1 }},
  {{ name = "truthfulqa_de", limit = 10 }},
  {{ name = "perplexity_de", task = "perplexity", dataset = "held_out_de" }},
  {{ name = "perplexity_en", task = "perplexity", dataset = "held_out_en" }},
]
"#,
            tok = data.join("llama2-tokenizer/tokenizer.json").display(),
            gb = gb.display(),
        ),
    );
    sb.leo_ok(&["run", "eval.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");

    // Every task's scores are the stage's metrics.
    let metrics = &stage(&status, "eval")["metrics"];
    for name in [
        "arc_challenge_de/acc",
        "arc_challenge_de/acc_norm",
        "mmlu_de/acc",
        "truthfulqa_de/mc1",
        "truthfulqa_de/mc2",
        "perplexity_de/bits_per_byte",
        "perplexity_en/word_perplexity",
    ] {
        let v = metrics[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        assert!(v.is_finite() && v >= 0.0, "{name} = {v}");
    }
    let text = sb.leo_ok(&["status"]);
    assert!(
        text.contains("mmlu_de/acc"),
        "leo status does not show the scores:\n{text}"
    );

    // The results JSON is lm-eval's shape, and says what the metrics say.
    let results_digest = output_digest(&status, "eval", "results");
    let files = artifact_files(&sb, &results_digest);
    let (_, body) = files
        .as_object()
        .and_then(|f| f.iter().next())
        .expect("results.json");
    let results: Value = serde_json::from_str(body.as_str().expect("text")).expect("json");
    for key in [
        "results",
        "groups",
        "group_subtasks",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
    ] {
        assert!(results.get(key).is_some(), "results.json lacks `{key}`");
    }
    assert_eq!(
        results["group_subtasks"]["mmlu_de"]
            .as_array()
            .map(Vec::len),
        Some(57)
    );
    assert_eq!(
        results["results"]["mmlu_de"]["acc,none"].as_f64(),
        metrics["mmlu_de/acc"].as_f64()
    );
    assert_eq!(
        results["results"]["perplexity_de"]["bits_per_byte,none"].as_f64(),
        metrics["perplexity_de/bits_per_byte"].as_f64()
    );
    assert_eq!(results["n-samples"]["arc_challenge_de"]["effective"], 8);
    let samples = artifact_files(&sb, &output_digest(&status, "eval", "samples"));
    let arc = samples
        .as_object()
        .and_then(|f| {
            f.iter()
                .find(|(p, _)| p.ends_with("samples_arc_challenge_de.jsonl"))
        })
        .map(|(_, v)| v.as_str().expect("text").to_string())
        .expect("samples_arc_challenge_de.jsonl");
    assert_eq!(arc.lines().count(), 8);
    let first: Value = serde_json::from_str(arc.lines().next().expect("a record")).expect("json");
    assert_eq!(
        first["loglikelihoods"].as_array().map(Vec::len),
        first["choices"].as_array().map(Vec::len)
    );
    assert!(
        first["prompt"]
            .as_str()
            .is_some_and(|p| p.ends_with("\nAntwort:")),
        "{first}"
    );

    // The lineage of the results: the scores, the model they were computed on, its data.
    let lineage = sb.leo_json(&["lineage", &results_digest, "--json"]);
    assert_eq!(
        lineage["produced_by"]["metrics"]["mmlu_de/acc"].as_f64(),
        metrics["mmlu_de/acc"].as_f64(),
        "{lineage}"
    );
    let model = lineage["inputs"]
        .as_array()
        .and_then(|i| i.iter().find(|c| c["name"] == "model"))
        .expect("the model input");
    assert_eq!(model["produced_by"]["stage"], "pretrain", "{model}");
    assert!(
        model["produced_by"]["metrics"]["loss"].as_f64().is_some(),
        "{model}"
    );
    let tree = sb.leo_ok(&["lineage", &results_digest]);
    assert!(
        tree.contains("metrics: ") && tree.contains("arc_challenge_de/acc="),
        "{tree}"
    );
    assert!(
        tree.contains("docs.jsonl"),
        "the lineage does not reach the training text:\n{tree}"
    );
}
