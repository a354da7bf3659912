//! Documents into prompts: the context (description, few-shot examples, the question) and the
//! continuations to score, built as lm-evaluation-harness 0.4 builds them
//! (`ConfigurableTask.fewshot_context` and `construct_requests`, plain-text prompts).

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::pyrandom::PyRandom;
use crate::task::{OutputType, Sampler, TaskSpec};
use crate::template::{Doc, Templates};

/// What a document's scores are compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Gold {
    /// The index of the right choice; `None` when the target names no choice (scored wrong, as
    /// lm-eval's -100).
    Choice(Option<usize>),
    /// TruthfulQA: the first `mc1` choices are the mc1 set (the true one first), the rest the
    /// mc2 set with its labels.
    Truthful { mc1: usize, mc2_labels: Vec<i64> },
    /// A text scored as a whole.
    Rolling,
}

/// One document's requests.
#[derive(Debug, Clone)]
pub struct Item {
    /// The document's index in its split (before `limit`).
    pub doc_id: usize,
    pub doc: Doc,
    /// For `loglikelihood_rolling`: the text; else the prompt.
    pub context: String,
    /// The choice texts (without the target delimiter); for rolling, empty.
    pub choices: Vec<String>,
    /// The continuations scored: `target_delimiter + choice`.
    pub continuations: Vec<String>,
    pub gold: Gold,
    /// The target as lm-eval's samples show it.
    pub target: Value,
}

/// The items of one (sub)task and the few-shot count actually used.
pub struct Built {
    pub items: Vec<Item>,
    pub n_shot: usize,
}

/// Builds the items of the first `limit` test documents. `fewshot` is the few-shot split's
/// documents (`None` for 0-shot tasks); `seed` seeds the task's one few-shot generator.
pub fn build(
    spec: &TaskSpec,
    t: &Templates,
    test: &[Doc],
    fewshot: Option<&[Doc]>,
    limit: Option<usize>,
    seed: i64,
) -> Result<Built> {
    let n = limit.map_or(test.len(), |l| l.min(test.len()));
    let same_split = spec.fewshot_split.as_deref() == Some(spec.test_split.as_str());
    let mut rnd = PyRandom::new(seed);
    let pool: &[Doc] = fewshot.unwrap_or(&[]);
    let mut n_shot = spec.num_fewshot;
    if spec.num_fewshot > 0 && spec.fewshot_sampler == Sampler::FirstN {
        // lm-eval asserts when the pool is short (MMLU's dev split has 3-4 examples for a few
        // subjects); LeoLM's fork takes what there is. So does leo, and reports the count.
        n_shot = n_shot.min(pool.len());
    }
    if spec.num_fewshot > 0 && pool.is_empty() {
        bail!(
            "num_fewshot = {}: the `{}` split has no documents",
            spec.num_fewshot,
            spec.fewshot_split.as_deref().unwrap_or_default()
        );
    }
    let mut items = Vec::with_capacity(n);
    for (doc_id, doc) in test.iter().take(n).enumerate() {
        let item = (|| -> Result<Item> {
            let examples = if spec.num_fewshot == 0 {
                Vec::new()
            } else {
                let eval_doc = same_split.then_some(doc);
                match spec.fewshot_sampler {
                    Sampler::FirstN => pool
                        .iter()
                        .filter(|d| Some(*d) != eval_doc)
                        .take(n_shot)
                        .collect(),
                    Sampler::Random => sample(&mut rnd, pool, spec.num_fewshot, eval_doc)?,
                }
            };
            make_item(spec, t, doc_id, doc, &examples)
        })()
        .with_context(|| format!("document {doc_id} of the `{}` split", spec.test_split))?;
        items.push(item);
    }
    Ok(Built { items, n_shot })
}

/// lm-eval's `ContextSampler.sample`: `n` documents, or `n + 1` with the evaluated one
/// removed when few-shot examples come from the evaluated split.
fn sample<'a>(
    rnd: &mut PyRandom,
    pool: &'a [Doc],
    n: usize,
    eval_doc: Option<&Doc>,
) -> Result<Vec<&'a Doc>> {
    let Some(eval_doc) = eval_doc else {
        if n > pool.len() {
            bail!(
                "num_fewshot = {n}, but the few-shot split has {} documents",
                pool.len()
            );
        }
        return Ok(rnd
            .sample(pool.len(), n)
            .into_iter()
            .map(|i| &pool[i])
            .collect());
    };
    if n + 1 > pool.len() {
        bail!(
            "num_fewshot = {n}, but the few-shot split has {} documents",
            pool.len()
        );
    }
    let drawn: Vec<&Doc> = rnd
        .sample(pool.len(), n + 1)
        .into_iter()
        .map(|i| &pool[i])
        .filter(|d| *d != eval_doc)
        .take(n)
        .collect();
    if drawn.len() == n {
        return Ok(drawn);
    }
    // Several copies of the evaluated document were drawn: draw again without any of them.
    let rest: Vec<&Doc> = pool.iter().filter(|d| *d != eval_doc).collect();
    if n > rest.len() {
        bail!(
            "num_fewshot = {n}, but the few-shot split has {} other documents",
            rest.len()
        );
    }
    Ok(rnd
        .sample(rest.len(), n)
        .into_iter()
        .map(|i| rest[i])
        .collect())
}

fn make_item(
    spec: &TaskSpec,
    t: &Templates,
    doc_id: usize,
    doc: &Doc,
    examples: &[&Doc],
) -> Result<Item> {
    if spec.output_type == OutputType::LoglikelihoodRolling {
        let text = t.text("doc_to_target", &spec.doc_to_target, doc)?;
        return Ok(Item {
            doc_id,
            doc: doc.clone(),
            target: Value::String(text.clone()),
            context: text,
            choices: Vec::new(),
            continuations: Vec::new(),
            gold: Gold::Rolling,
        });
    }
    let mut context = if spec.description.is_empty() {
        String::new()
    } else {
        t.text("description", &spec.description, doc)?
    };
    for ex in examples {
        let q = t.text("doc_to_text", &spec.doc_to_text, ex)?;
        let answer = answer_text(spec, t, ex)?;
        context.push_str(&q);
        context.push_str(&spec.target_delimiter);
        context.push_str(&answer);
        context.push_str(&spec.fewshot_delimiter);
    }
    context.push_str(&t.text("doc_to_text", &spec.doc_to_text, doc)?);

    let (choices, gold, target) = match spec.output_type {
        OutputType::MultipleChoice => {
            let src = spec.doc_to_choice.as_deref().unwrap_or_default();
            let choices = t.strings("doc_to_choice", src, doc)?;
            let target = t.value("doc_to_target", &spec.doc_to_target, doc)?;
            let gold = match &target {
                Value::Number(n) => n
                    .as_u64()
                    .map(|i| i as usize)
                    .filter(|&i| i < choices.len()),
                Value::String(s) => choices.iter().position(|c| c == s),
                other => bail!("doc_to_target: expected an index or a choice, found {other}"),
            };
            (choices, Gold::Choice(gold), target)
        }
        OutputType::TruthfulqaMc => {
            let field = |name: &str, v: &Option<String>| -> Result<String> {
                v.clone().with_context(|| format!("{name} is missing"))
            };
            let mc1 = t.strings(
                "mc1_choices",
                &field("mc1_choices", &spec.mc1_choices)?,
                doc,
            )?;
            let mc2 = t.strings(
                "mc2_choices",
                &field("mc2_choices", &spec.mc2_choices)?,
                doc,
            )?;
            let labels =
                match t.value("mc2_labels", &field("mc2_labels", &spec.mc2_labels)?, doc)? {
                    Value::Array(v) => v
                        .iter()
                        .map(|l| l.as_i64().context("mc2_labels: expected 0/1 labels"))
                        .collect::<Result<Vec<i64>>>()?,
                    other => bail!("mc2_labels: expected a list of labels, found {other}"),
                };
            if labels.len() != mc2.len() {
                bail!(
                    "mc2_labels: {} labels for {} choices",
                    labels.len(),
                    mc2.len()
                );
            }
            if !labels.contains(&0) || labels.first() != Some(&1) {
                bail!("mc2_labels: expected the true answers (1) first, then at least one 0");
            }
            if mc1.is_empty() {
                bail!("mc1_choices: empty");
            }
            let gold = Gold::Truthful {
                mc1: mc1.len(),
                mc2_labels: labels,
            };
            let mut choices = mc1;
            choices.extend(mc2);
            (choices, gold, Value::from(0))
        }
        OutputType::LoglikelihoodRolling => unreachable!("handled above"),
    };
    if choices.is_empty() {
        bail!("doc_to_choice: no choices");
    }
    let continuations = choices
        .iter()
        .map(|c| format!("{}{c}", spec.target_delimiter))
        .collect();
    Ok(Item {
        doc_id,
        doc: doc.clone(),
        context,
        choices,
        continuations,
        gold,
        target,
    })
}

/// A few-shot example's answer: the choice its target names (lm-eval's `build_qa_turn`).
fn answer_text(spec: &TaskSpec, t: &Templates, doc: &Doc) -> Result<String> {
    let target = t.value("doc_to_target", &spec.doc_to_target, doc)?;
    match (&target, &spec.doc_to_choice) {
        (Value::Number(n), Some(src)) => {
            let choices = t.strings("doc_to_choice", src, doc)?;
            let i = n.as_u64().unwrap_or(u64::MAX) as usize;
            choices.get(i).cloned().with_context(|| {
                format!(
                    "doc_to_target: {i} is not a choice index (of {})",
                    choices.len()
                )
            })
        }
        (Value::String(s), _) => Ok(s.clone()),
        (Value::Array(v), _) => match v.first() {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => bail!("doc_to_target: expected a list of strings"),
        },
        (other, _) => Ok(other.to_string()),
    }
}
