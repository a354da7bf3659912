//! Task definitions: data, not code.
//!
//! A task is a TOML file whose fields are lm-evaluation-harness's YAML fields (`doc_to_text`,
//! `doc_to_choice`, `doc_to_target`, `target_delimiter`, `fewshot_delimiter`, `description`,
//! `num_fewshot`, `test_split`, `fewshot_split`) with the same Jinja semantics, so a user adds
//! or ports a task without Rust. The built-in ones (GermanBench and its English counterparts,
//! held-out perplexity) live in `plugins/eval/tasks/` and are compiled in.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How a task's documents become requests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// One log-likelihood per choice; `acc` (argmax), `acc_norm` (argmax per character).
    MultipleChoice,
    /// TruthfulQA's two views of one question: `mc1` (the single true answer, listed first, is
    /// the likeliest of its set) and `mc2` (the probability mass on the true answers).
    TruthfulqaMc,
    /// A whole text's log-likelihood in rolling windows: perplexities and bits per byte.
    LoglikelihoodRolling,
}

/// How few-shot examples are drawn from the few-shot split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// `random.Random(seed).sample(docs, k)` as lm-eval draws them (one generator per task,
    /// advanced document by document).
    #[default]
    Random,
    /// The first `k` in file order (MMLU's canonical dev examples).
    FirstN,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task's name (results key).
    pub task: String,
    pub output_type: OutputType,
    /// The stage input holding the task's files; default: the task's name.
    #[serde(default)]
    pub dataset: Option<String>,
    pub test_split: String,
    #[serde(default)]
    pub fewshot_split: Option<String>,
    #[serde(default)]
    pub num_fewshot: usize,
    #[serde(default)]
    pub fewshot_sampler: Sampler,
    /// Split the documents by this field into subtasks `TASK_VALUE`, each with its own few-shot
    /// examples; the task's score is the unweighted mean over subtasks (MMLU's subjects).
    #[serde(default)]
    pub subtask_field: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub doc_to_text: String,
    #[serde(default)]
    pub doc_to_choice: Option<String>,
    #[serde(default)]
    pub doc_to_target: String,
    #[serde(default = "default_target_delimiter")]
    pub target_delimiter: String,
    #[serde(default = "default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    #[serde(default)]
    pub mc1_choices: Option<String>,
    #[serde(default)]
    pub mc2_choices: Option<String>,
    #[serde(default)]
    pub mc2_labels: Option<String>,
    pub metrics: Vec<String>,
    /// Reported as the task's version in the results.
    #[serde(default)]
    pub version: Option<String>,
}

fn default_target_delimiter() -> String {
    " ".into()
}

fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "arc_challenge_de",
        include_str!("../tasks/arc_challenge_de.toml"),
    ),
    ("hellaswag_de", include_str!("../tasks/hellaswag_de.toml")),
    ("mmlu_de", include_str!("../tasks/mmlu_de.toml")),
    ("truthfulqa_de", include_str!("../tasks/truthfulqa_de.toml")),
    ("arc_challenge", include_str!("../tasks/arc_challenge.toml")),
    ("hellaswag", include_str!("../tasks/hellaswag.toml")),
    ("mmlu", include_str!("../tasks/mmlu.toml")),
    ("truthfulqa_mc", include_str!("../tasks/truthfulqa_mc.toml")),
    ("perplexity", include_str!("../tasks/perplexity.toml")),
];

impl TaskSpec {
    pub fn parse(text: &str, origin: &str) -> Result<TaskSpec> {
        let spec: TaskSpec = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim_end()))?;
        spec.check()
            .with_context(|| format!("{origin}: task `{}`", spec.task))?;
        Ok(spec)
    }

    fn check(&self) -> Result<()> {
        let allowed: &[&str] = match self.output_type {
            OutputType::MultipleChoice => &["acc", "acc_norm"],
            OutputType::TruthfulqaMc => &["mc1", "mc2"],
            OutputType::LoglikelihoodRolling => {
                &["word_perplexity", "byte_perplexity", "bits_per_byte"]
            }
        };
        if self.metrics.is_empty() {
            bail!("metrics: name at least one of {}", allowed.join(", "));
        }
        for m in &self.metrics {
            if !allowed.contains(&m.as_str()) {
                bail!("metrics: `{m}` is not one of {}", allowed.join(", "));
            }
        }
        match self.output_type {
            OutputType::MultipleChoice => {
                if self.doc_to_choice.is_none() {
                    bail!("doc_to_choice: a multiple_choice task needs it");
                }
                if self.doc_to_target.is_empty() {
                    bail!("doc_to_target: a multiple_choice task needs it");
                }
            }
            OutputType::TruthfulqaMc => {
                for (field, v) in [
                    ("mc1_choices", &self.mc1_choices),
                    ("mc2_choices", &self.mc2_choices),
                    ("mc2_labels", &self.mc2_labels),
                ] {
                    if v.is_none() {
                        bail!("{field}: a truthfulqa_mc task needs it");
                    }
                }
            }
            OutputType::LoglikelihoodRolling => {
                if self.doc_to_target.is_empty() {
                    bail!("doc_to_target: the text to score, e.g. \"{{{{text}}}}\"");
                }
                if self.num_fewshot > 0 {
                    bail!("num_fewshot: a loglikelihood_rolling task has no few-shot examples");
                }
            }
        }
        if self.num_fewshot > 0 && self.fewshot_split.is_none() {
            bail!(
                "fewshot_split: num_fewshot = {} needs a split to draw from",
                self.num_fewshot
            );
        }
        Ok(())
    }

    /// The stage input that holds this task's data.
    pub fn dataset_input(&self) -> &str {
        self.dataset.as_deref().unwrap_or(&self.task)
    }
}

/// Every task a stage can name: the built-ins, then the definitions in the `tasks` input (a
/// `.toml` file or a folder of them), which may replace a built-in of the same name.
pub fn catalog(user: Option<&Path>) -> Result<BTreeMap<String, TaskSpec>> {
    let mut out = BTreeMap::new();
    for (name, text) in BUILTIN {
        let spec = TaskSpec::parse(text, &format!("built-in task {name}"))?;
        out.insert(spec.task.clone(), spec);
    }
    if let Some(path) = user {
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in
                std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
            {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "toml") {
                    files.push(p);
                }
            }
            files.sort();
            if files.is_empty() {
                bail!("{}: no task definitions (*.toml)", path.display());
            }
        } else {
            files.push(path.to_path_buf());
        }
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let spec = TaskSpec::parse(&text, &f.display().to_string())?;
            out.insert(spec.task.clone(), spec);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() -> Result<()> {
        let c = catalog(None)?;
        assert_eq!(c["mmlu_de"].num_fewshot, 5);
        assert_eq!(c["mmlu_de"].fewshot_sampler, Sampler::FirstN);
        assert_eq!(
            c["arc_challenge_de"].fewshot_split.as_deref(),
            Some("validation")
        );
        assert_eq!(c["truthfulqa_de"].output_type, OutputType::TruthfulqaMc);
        Ok(())
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let err = TaskSpec::parse(
            "task = \"t\"\noutput_type = \"multiple_choice\"\ntest_split = \"test\"\ndoc_to_target = \"a\"\nmetrics = [\"acc\"]\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("doc_to_choice"), "{err:#}");
        let err = TaskSpec::parse(
            "task = \"t\"\noutput_type = \"multiple_choice\"\ntest_split = \"test\"\nmetrics = [\"bleu\"]\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("`bleu`"), "{err:#}");
        let err = TaskSpec::parse("task = \"t\"\nbogus = 1\n", "t.toml").unwrap_err();
        assert!(format!("{err:#}").starts_with("t.toml:"), "{err:#}");
    }
}
