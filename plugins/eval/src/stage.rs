//! The `eval` stage: a model checkpoint and benchmark datasets in, lm-eval-compatible results
//! and per-sample records out, each task's scores as metrics.
//!
//! ```toml
//! [stages.eval]
//! plugin = "eval"
//! inputs = { model = "stage:sft/model", arc_challenge_de = "file:///data/ArcChallenge_de/",
//!            held_out_de = "file:///data/held-out-de.txt" }
//! params.tasks = ["arc_challenge_de", { name = "perplexity_de", task = "perplexity", dataset = "held_out_de" }]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use leo_llama::{Llama, Tokenizer};
use leo_plugin::{Emitter, Event, Invocation, ParamError, Plugin};
use serde::Deserialize;
use serde_json::Value;
use tch::{Device, Kind};

use crate::evaluate::{self, Options, Selected};
use crate::results::{self, RunFacts};
use crate::task;

pub struct Eval;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TaskRef {
    Name(String),
    Entry(TaskEntry),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskEntry {
    /// The name in the results (and of the default dataset input).
    name: String,
    /// The definition to use; default: `name`.
    #[serde(default)]
    task: Option<String>,
    /// The input holding the data; default: the definition's `dataset`, else `name`.
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    num_fewshot: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    #[default]
    F32,
    Bf16,
    F16,
    F64,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalParams {
    tasks: Vec<TaskRef>,
    /// The first N documents of every (sub)task.
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    dtype: Dtype,
    #[serde(default)]
    device: DeviceChoice,
    /// Prepend BOS to every context (lm-eval 0.4's default for Llama); LeoLM's fork did not.
    #[serde(default)]
    add_bos_token: bool,
    /// The longest input; default: the model's `max_position_embeddings` (as lm-eval).
    #[serde(default)]
    max_length: Option<usize>,
    /// Seeds each task's few-shot sampler (lm-eval's `fewshot_random_seed`).
    #[serde(default = "default_seed")]
    fewshot_seed: i64,
    /// CPU threads for libtorch; default: libtorch's (one per core).
    #[serde(default)]
    threads: Option<i32>,
}

fn default_seed() -> i64 {
    1234
}

fn parse(params: &Value) -> Result<EvalParams, ParamError> {
    let p: EvalParams = serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let field = e.path().to_string();
        ParamError::new(
            if field == "." { String::new() } else { field },
            e.inner().to_string(),
        )
    })?;
    if p.tasks.is_empty() {
        return Err(ParamError::new("tasks", "name at least one task"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in p.tasks.iter().enumerate() {
        let name = match t {
            TaskRef::Name(n) => n,
            TaskRef::Entry(e) => &e.name,
        };
        if !seen.insert(name.clone()) {
            return Err(ParamError::new(
                format!("tasks[{i}]"),
                format!("`{name}` is named twice"),
            ));
        }
    }
    if p.threads.is_some_and(|t| t < 1) {
        return Err(ParamError::new("threads", "must be at least 1"));
    }
    if p.max_length == Some(0) {
        return Err(ParamError::new("max_length", "must be positive"));
    }
    Ok(p)
}

impl Plugin for Eval {
    fn name(&self) -> &'static str {
        "eval"
    }

    fn version(&self) -> String {
        "1".into()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        parse(params)?;
        Ok(vec!["results".into(), "samples".into()])
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let p = parse(&inv.params).map_err(|e| anyhow::anyhow!("{e}"))?;
        let input = |name: &str| -> Result<PathBuf> {
            inv.inputs
                .get(name)
                .map(|a| a.path.clone())
                .with_context(|| {
                    format!(
                        "stage {}: no input `{name}` (inputs: {})",
                        inv.stage,
                        inv.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
        };
        let catalog = task::catalog(inv.inputs.get("tasks").map(|a| a.path.as_path()))?;
        let mut selected = Vec::new();
        for t in &p.tasks {
            let entry = match t {
                TaskRef::Name(n) => TaskEntry {
                    name: n.clone(),
                    task: None,
                    dataset: None,
                    limit: None,
                    num_fewshot: None,
                },
                TaskRef::Entry(e) => e.clone(),
            };
            let def = entry.task.as_deref().unwrap_or(&entry.name);
            let Some(spec) = catalog.get(def) else {
                bail!(
                    "stage {}: params.tasks: no task `{def}` (known: {}; add definitions with a `tasks` input)",
                    inv.stage,
                    catalog.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            let mut spec = spec.clone();
            if let Some(n) = entry.num_fewshot {
                spec.num_fewshot = n;
            }
            let dataset = entry
                .dataset
                .clone()
                .or(spec.dataset.clone())
                .unwrap_or_else(|| entry.name.clone());
            selected.push(Selected {
                name: entry.name.clone(),
                spec,
                dataset: input(&dataset)?,
                limit: entry.limit.or(p.limit),
            });
        }

        let device = match p.device {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda if !tch::Cuda::is_available() => {
                bail!("params.device = \"cuda\", but no CUDA device is available")
            }
            DeviceChoice::Cuda => Device::Cuda(0),
            DeviceChoice::Auto => Device::cuda_if_available(),
        };
        let kind = match p.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::Bf16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
            Dtype::F64 => Kind::Double,
        };
        if let Some(t) = p.threads {
            tch::set_num_threads(t);
        }
        let model_dir = input("model")?;
        let model = Llama::load(&model_dir, device, kind)
            .with_context(|| format!("loading {}", model_dir.display()))?;
        let tokenizer = Tokenizer::from_file(&model_dir.join("tokenizer.json"))
            .with_context(|| format!("the tokenizer of {}", model_dir.display()))?;
        let max_length = p
            .max_length
            .unwrap_or(model.config.max_position_embeddings.max(1) as usize);

        let start = Instant::now();
        let built = evaluate::build(&selected, p.fewshot_seed)?;
        let items: usize = built.iter().map(|t| t.items.len()).sum();
        log(
            events,
            format!("{items} documents in {} (sub)tasks", built.len()),
        )?;
        let opts = Options {
            add_bos_token: p.add_bos_token,
            max_length,
            fewshot_seed: p.fewshot_seed,
        };
        let mut last = Instant::now();
        let eval = evaluate::score(built, &model, &tokenizer, &opts, |done, total| {
            if done == total || last.elapsed().as_millis() >= 500 {
                last = Instant::now();
                let _ = events.progress(done as u64, Some(total as u64), "requests");
            }
        })?;
        let seconds = start.elapsed().as_secs_f64();
        log(
            events,
            format!(
                "{items} documents, {} requests in {seconds:.1} s ({:.1} documents/s, {:.1} requests/s)",
                eval.requests,
                items as f64 / seconds,
                eval.requests as f64 / seconds
            ),
        )?;

        let facts = RunFacts {
            model: model_dir.display().to_string(),
            dtype: format!("{kind:?}"),
            device: format!("{device:?}"),
            parameters: model
                .named_tensors()
                .iter()
                .map(|(_, t)| t.numel() as i64)
                .sum(),
            add_bos_token: p.add_bos_token,
            max_length,
            fewshot_seed: p.fewshot_seed,
            limit: p.limit,
            seconds,
        };
        let json = results::results_json(&eval, &facts);
        let results_path = inv.output_dir.join("results.json");
        std::fs::write(&results_path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", results_path.display()))?;
        let samples_dir = inv.output_dir.join("samples");
        results::write_samples(&eval, &samples_dir)?;

        // Each named task's (or group's) scores as metrics; subtasks stay in the results.
        for t in &p.tasks {
            let name = match t {
                TaskRef::Name(n) => n,
                TaskRef::Entry(e) => &e.name,
            };
            let aggregates = eval
                .groups
                .iter()
                .find(|g| &g.name == name)
                .map(|g| &g.aggregates)
                .or_else(|| {
                    eval.tasks
                        .iter()
                        .find(|t| &t.name == name)
                        .map(|t| &t.aggregates)
                });
            for (metric, a) in aggregates.into_iter().flatten() {
                events.metric(None, &format!("{name}/{metric}"), a.value)?;
            }
        }
        events.output("results", &results_path)?;
        events.output("samples", &samples_dir)?;
        Ok(())
    }
}

fn log(events: &Emitter, message: String) -> std::io::Result<()> {
    events.emit(&Event::Log {
        level: "info".into(),
        message,
    })
}
