//! leo's eval stage against lm-evaluation-harness 0.4 (HF backend, `add_bos_token=False` as
//! LeoLM's fork), on a tiny random Llama that transformers makes and the GermanBench sample:
//! every document's prompt, continuations, log-likelihoods (f64: to 1e-9), greedy flags and
//! predictions, every per-document and aggregate metric and stderr (to 1e-6) must agree, and
//! leo's results JSON must load in lm-eval's own table code.
//!
//! lm-eval recomputes the whole context for every choice, so the documents are a subset (the
//! first 12 ARC-DE test questions, the first 10 TruthfulQA-DE ones, the first question of each
//! of the 57 MMLU-DE subjects, and a held-out German text as bits per byte) with the full
//! few-shot splits; `just bench eval` runs more. Both sides read the same files.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use leo_llama::tch::{Device, Kind};
use leo_llama::{Llama, Tokenizer};
use leo_plugin_eval::evaluate::{self, Options, Selected};
use leo_plugin_eval::results::{self, RunFacts};
use leo_plugin_eval::task;
use serde_json::Value;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn write(path: &Path, rows: &[String]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut f = std::fs::File::create(path).expect("create");
    for r in rows {
        writeln!(f, "{r}").expect("write");
    }
}

/// The document subset both sides read.
fn datasets(shared: &Path, root: &Path) -> Vec<(&'static str, PathBuf)> {
    let gb = shared.join("germanbench-sample");
    let arc = root.join("data/arc_challenge_de");
    write(
        &arc.join("test.jsonl"),
        &lines(&gb.join("arc_challenge_de/test.jsonl"))[..12],
    );
    write(
        &arc.join("validation.jsonl"),
        &lines(&gb.join("arc_challenge_de/validation.jsonl")),
    );
    let tqa = root.join("data/truthfulqa_de");
    write(
        &tqa.join("validation.jsonl"),
        &lines(&gb.join("truthfulqa_de/validation.jsonl"))[..10],
    );
    let mmlu = root.join("data/mmlu_de");
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<String> = lines(&gb.join("mmlu_de/test.jsonl"))
        .into_iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            seen.insert(v["subject"].as_str().expect("subject").to_string())
        })
        .collect();
    assert_eq!(firsts.len(), 57, "one question per MMLU subject");
    write(&mmlu.join("test.jsonl"), &firsts);
    write(
        &mmlu.join("dev.jsonl"),
        &lines(&gb.join("mmlu_de/dev.jsonl")),
    );
    // Held-out text: 25 passages, and one line of 60 more, longer than the model's 2,048
    // positions, so rolling windows are exercised.
    let passages = lines(&shared.join("demo/de/germandpr-passages.txt"));
    let mut text: Vec<String> = passages[..25].to_vec();
    text.push(passages[25..85].join(" "));
    let held_out = root.join("data/held_out_de.txt");
    write(&held_out, &text);
    vec![
        ("arc_challenge_de", arc),
        ("truthfulqa_de", tqa),
        ("mmlu_de", mmlu),
        ("perplexity", held_out),
    ]
}

fn run_python(python: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lm_eval_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run lm_eval_reference.py");
    assert!(
        out.status.success(),
        "lm_eval_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_item_and_metric_equals_lm_evals() {
    let (Some(shared), Some(python)) = (support::shared_data(), support::python()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let model_dir = root.join("model");
    let tokenizer = shared.join("llama2-tokenizer/tokenizer.json");
    run_python(
        &python,
        &[
            "make-model",
            model_dir.to_str().expect("utf-8"),
            "--tokenizer",
            tokenizer.to_str().expect("utf-8"),
        ],
    );
    let data = datasets(&shared, root);

    // lm-eval, from leo's task definitions turned into its YAMLs.
    let reference = root.join("lm-eval");
    let tasks_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--model".into(),
        model_dir.display().to_string(),
        "--tasks-dir".into(),
        tasks_dir.display().to_string(),
        "--tasks".into(),
        data.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        "--out".into(),
        reference.display().to_string(),
        "--dtype".into(),
        "float64".into(),
        // f64 logits of 8 x 2,048 positions x 32,000 would be 4 GB; batches change no result.
        "--batch-size".into(),
        "2".into(),
    ];
    for (name, path) in &data {
        args.push("--data".into());
        args.push(format!("{name}={}", path.display()));
    }
    run_python(
        &python,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // leo, in f64 as well, so the only differences left are the order of float operations.
    let catalog = task::catalog(None).expect("built-in tasks");
    let selected: Vec<Selected> = data
        .iter()
        .map(|(name, path)| Selected {
            name: name.to_string(),
            spec: catalog[*name].clone(),
            dataset: path.clone(),
            limit: None,
        })
        .collect();
    let model = Llama::load(&model_dir, Device::Cpu, Kind::Double).expect("load");
    let tok = Tokenizer::from_file(&model_dir.join("tokenizer.json")).expect("tokenizer");
    let opts = Options {
        add_bos_token: false,
        max_length: model.config.max_position_embeddings as usize,
        fewshot_seed: 1234,
    };
    let built = evaluate::build(&selected, 1234).expect("build");
    let eval = evaluate::score(built, &model, &tok, &opts, |_, _| {}).expect("score");
    let ours = root.join("leo");
    std::fs::create_dir_all(&ours).expect("mkdir");
    let facts = RunFacts {
        model: model_dir.display().to_string(),
        dtype: "Double".into(),
        device: "cpu".into(),
        parameters: 0,
        add_bos_token: false,
        max_length: opts.max_length,
        fewshot_seed: 1234,
        limit: None,
        seconds: 0.0,
    };
    std::fs::write(
        ours.join("results.json"),
        serde_json::to_vec_pretty(&results::results_json(&eval, &facts)).expect("json"),
    )
    .expect("write");
    results::write_samples(&eval, &ours).expect("samples");

    // Per-sample records are complete.
    for t in &eval.tasks {
        let path = ours.join(format!("samples_{}.jsonl", t.name));
        let rows = lines(&path);
        assert_eq!(rows.len(), t.items.len(), "{}", path.display());
        for row in rows {
            let v: Value = serde_json::from_str(&row).expect("json");
            let fields: &[&str] = if t.is_rolling() {
                &["prompt", "loglikelihood", "bits_per_byte", "doc", "doc_id"]
            } else {
                &[
                    "prompt",
                    "choices",
                    "loglikelihoods",
                    "prediction",
                    "gold",
                    "doc",
                    "doc_id",
                ]
            };
            for f in fields {
                assert!(
                    !v[f].is_null(),
                    "{}: a record without `{f}`",
                    path.display()
                );
            }
        }
    }

    let compare = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compare_results.py");
    let out = Command::new(&python)
        .arg(compare)
        .arg(&ours)
        .arg(&reference)
        .args(["--tolerance", "1e-6", "--ll-tolerance", "1e-9"])
        .output()
        .expect("compare_results.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "leo and lm-eval differ:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_str(report.lines().last().expect("summary")).expect("json");
    // 12 ARC + 10 TruthfulQA + 57 MMLU + 26 texts, all compared.
    assert_eq!(summary["items"], 105, "{report}");
    eprintln!("{report}");
}
