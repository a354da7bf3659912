//! What a report shows, computed from a run context: the stages in graph order, training
//! curves, the eval table and the German/English pairs. Serialised as `report.json` beside the
//! page, so a report made by the `report` stage and one made by `leo report` can be compared.

use std::collections::{BTreeMap, BTreeSet};

use leo_plugin::{MetricPoint, RunContext, RunInfo, StageContext};
use serde::Serialize;

/// Bumped when `report.json` changes incompatibly.
pub const REPORT_VERSION: u32 = 1;

/// Metric names charted as training curves (as the trainer reports them), loss first.
pub const LOSS_METRICS: &[&str] = &["loss", "val_loss"];

/// GermanBench tasks whose English original is not `BASE_en` nor `BASE`.
const ENGLISH_OF: &[(&str, &str)] = &[("truthfulqa_de", "truthfulqa_mc")];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportData {
    /// [`REPORT_VERSION`].
    pub leo_report: u32,
    pub title: Option<String>,
    pub run: RunInfo,
    /// Stage names upstream first (by depth in the graph, then name).
    pub order: Vec<String>,
    pub stages: BTreeMap<String, StageContext>,
    /// Stages that reported a stepped `loss`, in [`Self::order`].
    pub training: Vec<String>,
    /// Every `TASK/METRIC` of every eval stage, in stage order.
    pub evals: Vec<EvalRow>,
    pub pairs: Vec<LanguagePair>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub stage: String,
    pub task: String,
    pub metric: String,
    /// `None` for a value that is not a finite number.
    pub value: Option<f64>,
    pub stderr: Option<f64>,
    pub lower_is_better: bool,
}

/// A German task and its English counterpart, scored with the same metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguagePair {
    pub german: String,
    pub english: String,
    pub metric: String,
    pub lower_is_better: bool,
    /// One entry per eval stage that scored either task, in stage order.
    pub values: Vec<PairValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairValue {
    pub stage: String,
    pub german: Option<f64>,
    pub english: Option<f64>,
}

impl ReportData {
    pub fn from_context(context: RunContext, title: Option<String>) -> ReportData {
        let order = graph_order(&context.stages);
        let training = order
            .iter()
            .filter(|s| {
                context.stages[*s]
                    .metrics
                    .iter()
                    .any(|m| m.name == "loss" && m.step.is_some())
            })
            .cloned()
            .collect();
        let evals = eval_rows(&order, &context.stages);
        let pairs = language_pairs(&evals, &order);
        ReportData {
            leo_report: REPORT_VERSION,
            title,
            run: context.run,
            order,
            stages: context.stages,
            training,
            evals,
            pairs,
        }
    }
}

/// Whether smaller values of a metric are better (perplexities, bits per byte, losses).
pub fn lower_is_better(metric: &str) -> bool {
    metric.contains("perplexity")
        || metric.contains("bits_per_byte")
        || metric.contains("loss")
        || metric == "ppl"
        || metric.ends_with("_ppl")
}

/// The depth of each stage: 0 for a stage that waits for none of the given stages, else one
/// more than the deepest stage it waits for.
pub fn depths(stages: &BTreeMap<String, StageContext>) -> BTreeMap<String, usize> {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    // Longest path by relaxation: at most one pass per stage for a DAG.
    for _ in 0..=stages.len() {
        let mut changed = false;
        for (name, s) in stages {
            let d = s
                .needs
                .iter()
                .filter(|n| stages.contains_key(*n))
                .map(|n| depth.get(n).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            if depth.get(name) != Some(&d) {
                depth.insert(name.clone(), d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

fn graph_order(stages: &BTreeMap<String, StageContext>) -> Vec<String> {
    let depth = depths(stages);
    let mut order: Vec<String> = stages.keys().cloned().collect();
    order.sort_by_key(|s| (depth.get(s).copied().unwrap_or(0), s.clone()));
    order
}

/// The last value of each metric, in the order the metrics were first reported.
pub fn latest_values(metrics: &[MetricPoint]) -> Vec<(&str, f64)> {
    let mut out: Vec<(&str, f64)> = Vec::new();
    for m in metrics {
        match out.iter_mut().find(|(n, _)| *n == m.name) {
            Some(slot) => slot.1 = m.value,
            None => out.push((&m.name, m.value)),
        }
    }
    out
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `TASK/METRIC` values of every stage that reported any; `TASK/METRIC_stderr` becomes the
/// stderr of `TASK/METRIC` when that is reported too.
pub fn eval_rows(order: &[String], stages: &BTreeMap<String, StageContext>) -> Vec<EvalRow> {
    let mut rows = Vec::new();
    for stage in order {
        let values = latest_values(&stages[stage].metrics);
        let scored: BTreeMap<&str, f64> = values.iter().copied().collect();
        for (name, value) in &values {
            let Some((task, metric)) = name.split_once('/') else {
                continue;
            };
            if let Some(base) = name.strip_suffix("_stderr") {
                if scored.contains_key(base) {
                    continue;
                }
            }
            rows.push(EvalRow {
                stage: stage.clone(),
                task: task.to_string(),
                metric: metric.to_string(),
                value: finite(*value),
                stderr: scored
                    .get(format!("{name}_stderr").as_str())
                    .copied()
                    .and_then(finite),
                lower_is_better: lower_is_better(metric),
            });
        }
    }
    rows
}

/// The English counterpart of a German task among `tasks`: `BASE_en`, GermanBench's original
/// (`truthfulqa_mc` for `truthfulqa_de`), or `BASE`. `None` for a task that is not German.
pub fn english_counterpart<'a>(german: &str, tasks: &BTreeSet<&'a str>) -> Option<&'a str> {
    let base = german.strip_suffix("_de")?;
    let special = ENGLISH_OF
        .iter()
        .find(|(de, _)| *de == german)
        .map(|(_, en)| en.to_string());
    [Some(format!("{base}_en")), special, Some(base.to_string())]
        .into_iter()
        .flatten()
        .find_map(|candidate| tasks.get(candidate.as_str()).copied())
}

/// German/English task pairs scored with the same metric, each with every eval stage's values.
pub fn language_pairs(rows: &[EvalRow], order: &[String]) -> Vec<LanguagePair> {
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    let metrics_of = |task: &str| -> BTreeSet<&str> {
        rows.iter()
            .filter(|r| r.task == task)
            .map(|r| r.metric.as_str())
            .collect()
    };
    let value = |stage: &str, task: &str, metric: &str| {
        rows.iter()
            .find(|r| r.stage == stage && r.task == task && r.metric == metric)
            .and_then(|r| r.value)
    };
    let mut pairs = Vec::new();
    for german in &tasks {
        let Some(english) = english_counterpart(german, &tasks) else {
            continue;
        };
        let english_metrics = metrics_of(english);
        for metric in metrics_of(german).intersection(&english_metrics) {
            let values = order
                .iter()
                .filter(|s| {
                    rows.iter().any(|r| {
                        &r.stage == *s
                            && r.metric == *metric
                            && (r.task == *german || r.task == english)
                    })
                })
                .map(|s| PairValue {
                    stage: s.clone(),
                    german: value(s, german, metric),
                    english: value(s, english, metric),
                })
                .collect();
            pairs.push(LanguagePair {
                german: german.to_string(),
                english: english.to_string(),
                metric: metric.to_string(),
                lower_is_better: lower_is_better(metric),
                values,
            });
        }
    }
    pairs
}
