//! Outputs in lm-evaluation-harness 0.4's shapes: the results JSON (the dict `simple_evaluate`
//! returns, without samples: `results`, `groups`, `group_subtasks`, `configs`, `versions`,
//! `n-shot`, `higher_is_better`, `n-samples`, `config`, …) and per-sample records (lm-eval's
//! `samples_TASK.jsonl` fields, plus leo's plain ones: `prompt`, `choices`, `loglikelihoods`,
//! `prediction`, `gold`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::evaluate::{Evaluation, TaskResult};
use crate::metrics::Aggregate;
use crate::requests::Gold;

/// What the results say about the model and the run (lm-eval's `config`).
pub struct RunFacts {
    pub model: String,
    pub dtype: String,
    pub device: String,
    pub parameters: i64,
    pub add_bos_token: bool,
    pub max_length: usize,
    pub fewshot_seed: i64,
    pub limit: Option<usize>,
    pub seconds: f64,
}

fn metric_entries(out: &mut Map<String, Value>, aggregates: &[(String, Aggregate)]) {
    for (m, a) in aggregates {
        out.insert(format!("{m},none"), json!(a.value));
        out.insert(
            format!("{m}_stderr,none"),
            a.stderr.map_or(json!("N/A"), |s| json!(s)),
        );
    }
}

pub fn results_json(eval: &Evaluation, facts: &RunFacts) -> Value {
    let mut results = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut higher = Map::new();
    let mut n_samples = Map::new();
    let mut groups = Map::new();
    let mut group_subtasks = Map::new();
    for g in &eval.groups {
        let mut entry = Map::new();
        entry.insert("alias".into(), json!(g.name));
        entry.insert("name".into(), json!(g.name));
        entry.insert("sample_len".into(), json!(g.sample_len));
        metric_entries(&mut entry, &g.aggregates);
        let counts: Map<String, Value> = g
            .metrics
            .iter()
            .map(|m| (format!("{m},none"), json!(g.sample_len)))
            .collect();
        entry.insert("sample_count".into(), Value::Object(counts));
        results.insert(g.name.clone(), Value::Object(entry.clone()));
        groups.insert(g.name.clone(), Value::Object(entry));
        group_subtasks.insert(g.name.clone(), json!(g.subtasks));
        versions.insert(g.name.clone(), json!("N/A"));
        higher.insert(
            g.name.clone(),
            Value::Object(
                g.metrics
                    .iter()
                    .map(|m| (m.clone(), json!(crate::metrics::higher_is_better(m))))
                    .collect(),
            ),
        );
    }
    for t in &eval.tasks {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(t.name));
        entry.insert("alias".into(), json!(t.name));
        entry.insert("sample_len".into(), json!(t.items.len()));
        metric_entries(&mut entry, &t.aggregates);
        results.insert(t.name.clone(), Value::Object(entry));
        configs.insert(t.name.clone(), config(t));
        versions.insert(
            t.name.clone(),
            json!(t.spec.version.clone().unwrap_or_else(|| "Yaml".into())),
        );
        n_shot.insert(t.name.clone(), json!(t.n_shot));
        higher.insert(
            t.name.clone(),
            Value::Object(
                t.spec
                    .metrics
                    .iter()
                    .map(|m| (m.clone(), json!(crate::metrics::higher_is_better(m))))
                    .collect(),
            ),
        );
        n_samples.insert(
            t.name.clone(),
            json!({"original": t.original, "effective": t.items.len()}),
        );
    }
    json!({
        "results": results,
        "groups": groups,
        "group_subtasks": group_subtasks,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {
            "model": "leo",
            "model_args": format!("pretrained={},dtype={},add_bos_token={}", facts.model, facts.dtype, if facts.add_bos_token { "True" } else { "False" }),
            "model_num_parameters": facts.parameters,
            "model_dtype": facts.dtype,
            "batch_size": "auto",
            "device": facts.device,
            "limit": facts.limit,
            "bootstrap_iters": 0,
            "fewshot_seed": facts.fewshot_seed,
        },
        "git_hash": null,
        "date": chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        "max_length": facts.max_length,
        "total_evaluation_time_seconds": format!("{}", facts.seconds),
        "leo": {"version": env!("CARGO_PKG_VERSION"), "requests": eval.requests},
    })
}

/// The task's definition as lm-eval's `configs` entry shows it.
fn config(t: &TaskResult) -> Value {
    let s = &t.spec;
    let mut c = json!({
        "task": t.name,
        "test_split": s.test_split,
        "doc_to_text": s.doc_to_text,
        "doc_to_target": s.doc_to_target,
        "description": s.description,
        "target_delimiter": s.target_delimiter,
        "fewshot_delimiter": s.fewshot_delimiter,
        "num_fewshot": t.n_shot,
        "metric_list": s.metrics.iter().map(|m| json!({"metric": m, "higher_is_better": crate::metrics::higher_is_better(m)})).collect::<Vec<_>>(),
        "output_type": s.output_type,
    });
    if let Some(split) = &s.fewshot_split {
        c["fewshot_split"] = json!(split);
        c["fewshot_config"] = json!({"sampler": match s.fewshot_sampler { crate::task::Sampler::FirstN => "first_n", crate::task::Sampler::Random => "default" }, "split": split});
    }
    if let Some(ch) = &s.doc_to_choice {
        c["doc_to_choice"] = json!(ch);
    }
    c
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Writes `samples_TASK.jsonl` for every (sub)task into `dir`.
pub fn write_samples(eval: &Evaluation, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for t in &eval.tasks {
        let path = dir.join(format!("samples_{}.jsonl", t.name));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        for ((item, scores), outcome) in t.items.iter().zip(&t.scores).zip(&t.outcomes) {
            let mut row = json!({
                "doc_id": item.doc_id,
                "doc": item.doc,
                "target": item.target,
                "prompt": item.context,
                "prompt_hash": sha256(&item.context),
                "target_hash": sha256(&python_str(&item.target)),
            });
            match &item.gold {
                Gold::Rolling => {
                    let (ll, words, bytes) = outcome.rolling.unwrap_or_default();
                    row["arguments"] = json!([[item.context]]);
                    row["resps"] = json!([[ll]]);
                    row["filtered_resps"] = json!([ll]);
                    row["loglikelihood"] = json!(ll);
                    row["words"] = json!(words);
                    row["bytes"] = json!(bytes);
                    row["windows"] = json!(scores.len());
                }
                gold => {
                    row["arguments"] = json!(item
                        .continuations
                        .iter()
                        .map(|c| json!([item.context, c]))
                        .collect::<Vec<_>>());
                    row["resps"] = json!(scores
                        .iter()
                        .map(|s| json!([[s.loglikelihood, s.greedy]]))
                        .collect::<Vec<_>>());
                    row["filtered_resps"] = json!(scores
                        .iter()
                        .map(|s| json!([s.loglikelihood, s.greedy]))
                        .collect::<Vec<_>>());
                    row["choices"] = json!(item.choices);
                    row["loglikelihoods"] =
                        json!(scores.iter().map(|s| s.loglikelihood).collect::<Vec<_>>());
                    row["is_greedy"] = json!(scores.iter().map(|s| s.greedy).collect::<Vec<_>>());
                    row["prediction"] = json!(outcome.prediction);
                    if let Some(p) = outcome.prediction_norm {
                        row["prediction_norm"] = json!(p);
                    }
                    row["gold"] = match gold {
                        Gold::Choice(g) => json!(g),
                        Gold::Truthful { mc1, mc2_labels } => {
                            json!({"mc1": 0, "mc1_choices": mc1, "mc2_labels": mc2_labels})
                        }
                        Gold::Rolling => Value::Null,
                    };
                }
            }
            row["filter"] = json!("none");
            row["metrics"] = json!(t.spec.metrics);
            for (m, v) in &outcome.values {
                // lm-eval keeps a text's (log-likelihood, weight) pair per metric; the ratio is
                // taken over the corpus.
                row[m.as_str()] = match outcome.rolling {
                    Some((ll, words, _)) if m == "word_perplexity" => json!([ll, words]),
                    Some((ll, _, bytes)) => json!([ll, bytes]),
                    None => json!(v),
                };
            }
            serde_json::to_writer(&mut w, &row)?;
            w.write_all(b"\n")?;
        }
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Python's `str()` of a JSON value, for lm-eval's `target_hash` (numbers and strings).
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
