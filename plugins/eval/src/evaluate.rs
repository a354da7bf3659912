//! One evaluation: tasks → documents → requests → scores → metrics. Independent of the stage
//! protocol, so the benchmark and the tests drive it directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use leo_llama::{Llama, Tokenizer};

use crate::data::load_split;
use crate::encode::Encoder;
use crate::metrics::{self, Aggregate, Outcome};
use crate::requests::{self, Gold, Item};
use crate::score::{Request, Scored, Scorer};
use crate::task::{OutputType, TaskSpec};
use crate::template::{Doc, Templates};

/// A task to run: its definition, where its data is, how many documents.
pub struct Selected {
    /// The name results use (the task's, or the alias the stage gave it).
    pub name: String,
    pub spec: TaskSpec,
    pub dataset: PathBuf,
    pub limit: Option<usize>,
}

/// One scored (sub)task.
pub struct TaskResult {
    pub name: String,
    /// The group it belongs to (MMLU's subjects belong to `mmlu_de`).
    pub group: Option<String>,
    pub spec: TaskSpec,
    pub n_shot: usize,
    /// Documents in the split before `limit`.
    pub original: usize,
    pub items: Vec<Item>,
    /// Per item: each continuation's (or rolling window's) score.
    pub scores: Vec<Vec<Scored>>,
    pub outcomes: Vec<Outcome>,
    pub aggregates: Vec<(String, Aggregate)>,
}

/// A group's aggregate over its subtasks.
pub struct GroupResult {
    pub name: String,
    pub subtasks: Vec<String>,
    pub metrics: Vec<String>,
    pub aggregates: Vec<(String, Aggregate)>,
    pub sample_len: usize,
}

pub struct Evaluation {
    pub tasks: Vec<TaskResult>,
    pub groups: Vec<GroupResult>,
    pub requests: usize,
}

pub struct Options {
    pub add_bos_token: bool,
    pub max_length: usize,
    pub fewshot_seed: i64,
}

/// Builds every task's items (no model needed: prompts only).
pub fn build(selected: &[Selected], fewshot_seed: i64) -> Result<Vec<TaskResult>> {
    let t = Templates::new();
    let mut out = Vec::new();
    for sel in selected {
        let spec = &sel.spec;
        let ctx = || format!("task `{}` ({})", sel.name, sel.dataset.display());
        let test = load_split(&sel.dataset, &spec.test_split, true).with_context(ctx)?;
        let fewshot = match (&spec.fewshot_split, spec.num_fewshot) {
            (Some(split), n) if n > 0 => {
                Some(load_split(&sel.dataset, split, split == &spec.test_split).with_context(ctx)?)
            }
            _ => None,
        };
        let Some(field) = &spec.subtask_field else {
            let built =
                requests::build(spec, &t, &test, fewshot.as_deref(), sel.limit, fewshot_seed)
                    .with_context(ctx)?;
            out.push(result(sel.name.clone(), None, spec, built, test.len()));
            continue;
        };
        let by_subject = split_by(&test, field).with_context(ctx)?;
        let fewshot_by = match &fewshot {
            Some(f) => split_by(f, field).with_context(ctx)?,
            None => BTreeMap::new(),
        };
        for (subject, docs) in by_subject {
            let pool = fewshot_by.get(&subject).map(Vec::as_slice).unwrap_or(&[]);
            let name = format!("{}_{subject}", sel.name);
            let built = requests::build(
                spec,
                &t,
                &docs,
                fewshot.as_ref().map(|_| pool),
                sel.limit,
                fewshot_seed,
            )
            .with_context(|| format!("{}, subtask `{name}`", ctx()))?;
            out.push(result(
                name,
                Some(sel.name.clone()),
                spec,
                built,
                docs.len(),
            ));
        }
    }
    Ok(out)
}

fn result(
    name: String,
    group: Option<String>,
    spec: &TaskSpec,
    built: requests::Built,
    original: usize,
) -> TaskResult {
    TaskResult {
        name,
        group,
        spec: spec.clone(),
        n_shot: built.n_shot,
        original,
        items: built.items,
        scores: Vec::new(),
        outcomes: Vec::new(),
        aggregates: Vec::new(),
    }
}

/// Documents grouped by a field's value, in order of the value, each group in file order.
fn split_by(docs: &[Doc], field: &str) -> Result<BTreeMap<String, Vec<Doc>>> {
    let mut out: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
    for (i, d) in docs.iter().enumerate() {
        let key = match d.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => anyhow::bail!("document {i} has no `{field}` (subtask_field)"),
        };
        out.entry(key).or_default().push(d.clone());
    }
    Ok(out)
}

/// Scores built tasks with a model. `progress(done, total)` counts requests.
pub fn score(
    mut tasks: Vec<TaskResult>,
    model: &Llama,
    tokenizer: &Tokenizer,
    opts: &Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<Evaluation> {
    let encoder = Encoder {
        tokenizer,
        add_bos_token: opts.add_bos_token,
        prefix_token: model.config.bos_token_id.unwrap_or(1),
        max_length: opts.max_length,
    };
    // Every request of every task, with where its score goes.
    let mut all: Vec<Request> = Vec::new();
    let mut owner: Vec<(usize, usize)> = Vec::new();
    for (ti, task) in tasks.iter().enumerate() {
        for (ii, item) in task.items.iter().enumerate() {
            let reqs = match item.gold {
                Gold::Rolling => encoder.rolling(&item.context),
                _ => encoder.pairs(&item.context, &item.continuations),
            }
            .with_context(|| {
                format!("task `{}`, document {}: tokenizing", task.name, item.doc_id)
            })?;
            for r in reqs {
                all.push(r);
                owner.push((ti, ii));
            }
        }
    }
    let total = all.len();
    let mut scorer = Scorer::new(model, opts.max_length);
    let scored = scorer.score(&all, |done| progress(done, total))?;
    for task in &mut tasks {
        task.scores = vec![Vec::new(); task.items.len()];
    }
    for ((ti, ii), s) in owner.into_iter().zip(scored) {
        tasks[ti].scores[ii].push(s);
    }
    for task in &mut tasks {
        task.outcomes = task
            .items
            .iter()
            .zip(&task.scores)
            .map(|(item, s)| {
                let lls: Vec<f64> = s.iter().map(|x| x.loglikelihood).collect();
                metrics::outcome(item, &task.spec.metrics, &lls)
            })
            .collect();
        task.aggregates = task
            .spec
            .metrics
            .iter()
            .map(|m| (m.clone(), metrics::aggregate(m, &task.outcomes)))
            .collect();
    }
    let groups = groups(&tasks);
    Ok(Evaluation {
        tasks,
        groups,
        requests: total,
    })
}

fn groups(tasks: &[TaskResult]) -> Vec<GroupResult> {
    let mut names: Vec<&str> = tasks.iter().filter_map(|t| t.group.as_deref()).collect();
    names.dedup();
    names
        .into_iter()
        .map(|g| {
            let members: Vec<&TaskResult> = tasks
                .iter()
                .filter(|t| t.group.as_deref() == Some(g))
                .collect();
            let metrics = members[0].spec.metrics.clone();
            let aggregates = metrics
                .iter()
                .map(|m| {
                    let subs: Vec<Aggregate> = members
                        .iter()
                        .filter_map(|t| t.aggregates.iter().find(|(n, _)| n == m).map(|(_, a)| *a))
                        .collect();
                    (m.clone(), metrics::group(&subs))
                })
                .collect();
            GroupResult {
                name: g.to_string(),
                subtasks: members.iter().map(|t| t.name.clone()).collect(),
                metrics,
                aggregates,
                sample_len: members.iter().map(|t| t.items.len()).sum(),
            }
        })
        .collect()
}

impl TaskResult {
    pub fn is_rolling(&self) -> bool {
        self.spec.output_type == OutputType::LoglikelihoodRolling
    }
}
