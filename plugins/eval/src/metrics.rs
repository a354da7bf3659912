//! Per-document metrics and their aggregation, as lm-evaluation-harness 0.4 computes them
//! (`ConfigurableTask.process_results`, `api/metrics.py`, groups in `api/group.py`).

use crate::requests::{Gold, Item};

/// One document's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `(name, value)` in the task's metric order.
    pub values: Vec<(String, f64)>,
    /// Multiple choice: the argmax of the log-likelihoods and of the per-character ones.
    pub prediction: Option<usize>,
    pub prediction_norm: Option<usize>,
    /// Rolling: the text's total log-likelihood, words and UTF-8 bytes (the weights of the
    /// corpus-level perplexities).
    pub rolling: Option<(f64, usize, usize)>,
}

/// numpy's `argmax`: the first maximum (NaN wins, as in numpy).
fn argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, x) in v.enumerate() {
        if x.is_nan() {
            return i;
        }
        if i == 0 || x > best_v {
            best = i;
            best_v = x;
        }
    }
    best
}

/// The outcome of one document from its continuations' log-likelihoods (choice order).
pub fn outcome(item: &Item, metrics: &[String], lls: &[f64]) -> Outcome {
    let mut values = Vec::new();
    match &item.gold {
        Gold::Choice(gold) => {
            let pred = argmax(lls.iter().copied());
            let pred_norm = argmax(
                lls.iter()
                    .zip(&item.choices)
                    .map(|(ll, c)| ll / c.chars().count() as f64),
            );
            for m in metrics {
                let hit = match m.as_str() {
                    "acc" => Some(pred) == *gold,
                    "acc_norm" => Some(pred_norm) == *gold,
                    _ => continue,
                };
                values.push((m.clone(), if hit { 1.0 } else { 0.0 }));
            }
            Outcome {
                values,
                prediction: Some(pred),
                prediction_norm: Some(pred_norm),
                rolling: None,
            }
        }
        Gold::Truthful { mc1, mc2_labels } => {
            let pred = argmax(lls[..*mc1].iter().copied());
            for m in metrics {
                match m.as_str() {
                    "mc1" => values.push((m.clone(), if pred == 0 { 1.0 } else { 0.0 })),
                    "mc2" => {
                        let split = mc2_labels.iter().position(|&l| l == 0).unwrap_or(0);
                        let mc2 = &lls[*mc1..];
                        let p_true: Vec<f64> = mc2[..split].iter().map(|l| l.exp()).collect();
                        let p_false: f64 = mc2[split..].iter().map(|l| l.exp()).sum();
                        let total = p_true.iter().sum::<f64>() + p_false;
                        values.push((m.clone(), p_true.iter().map(|p| p / total).sum()));
                    }
                    _ => {}
                }
            }
            Outcome {
                values,
                prediction: Some(pred),
                prediction_norm: None,
                rolling: None,
            }
        }
        Gold::Rolling => {
            let ll: f64 = lls.iter().sum();
            let words = whitespace().split(&item.context).count();
            let bytes = item.context.len();
            for m in metrics {
                let v = match m.as_str() {
                    "word_perplexity" => (-ll / words as f64).exp(),
                    "byte_perplexity" => (-ll / bytes as f64).exp(),
                    "bits_per_byte" => -ll / bytes as f64 / std::f64::consts::LN_2,
                    _ => continue,
                };
                values.push((m.clone(), v));
            }
            Outcome {
                values,
                prediction: None,
                prediction_norm: None,
                rolling: Some((ll, words, bytes)),
            }
        }
    }
}

fn whitespace() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\s+").expect("a valid regex"))
}

/// A metric over a task: its value and standard error (`None` is lm-eval's "N/A").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    pub value: f64,
    pub stderr: Option<f64>,
}

/// Aggregates one metric over a task's outcomes: the mean with `mean_stderr` for per-document
/// scores; the corpus-level ratio for perplexities and bits per byte (no stderr, as lm-eval).
pub fn aggregate(metric: &str, outcomes: &[Outcome]) -> Aggregate {
    let rolling: Vec<(f64, usize, usize)> = outcomes.iter().filter_map(|o| o.rolling).collect();
    let ll: f64 = rolling.iter().map(|r| r.0).sum();
    let words: usize = rolling.iter().map(|r| r.1).sum();
    let bytes: usize = rolling.iter().map(|r| r.2).sum();
    match metric {
        "word_perplexity" => Aggregate {
            value: (-(ll / words as f64)).exp(),
            stderr: None,
        },
        "byte_perplexity" => Aggregate {
            value: (-(ll / bytes as f64)).exp(),
            stderr: None,
        },
        "bits_per_byte" => Aggregate {
            value: -(ll / bytes as f64) / std::f64::consts::LN_2,
            stderr: None,
        },
        _ => {
            let xs: Vec<f64> = outcomes
                .iter()
                .filter_map(|o| o.values.iter().find(|(n, _)| n == metric).map(|(_, v)| *v))
                .collect();
            Aggregate {
                value: mean(&xs),
                stderr: (xs.len() > 1).then(|| mean_stderr(&xs)),
            }
        }
    }
}

/// Python's `sum(xs) / len(xs)` (left to right).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// lm-eval's `mean_stderr`: the sample standard deviation over the square root of n.
fn mean_stderr(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    var.sqrt() / (xs.len() as f64).sqrt()
}

/// A group's score: the unweighted mean over its subtasks, and `unweighted_mean_stderr`
/// (`N/A` when a subtask has none).
pub fn group(subtasks: &[Aggregate]) -> Aggregate {
    let values: Vec<f64> = subtasks.iter().map(|a| a.value).collect();
    let stderr = subtasks
        .iter()
        .map(|a| a.stderr)
        .collect::<Option<Vec<f64>>>()
        .map(|s| s.iter().map(|e| e * e).sum::<f64>().sqrt() / s.len() as f64);
    Aggregate {
        value: values.iter().sum::<f64>() / values.len() as f64,
        stderr,
    }
}

pub fn higher_is_better(metric: &str) -> bool {
    !matches!(
        metric,
        "word_perplexity" | "byte_perplexity" | "bits_per_byte"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax([1.0, 3.0, 3.0].into_iter()), 1);
        assert_eq!(argmax([-5.0, -7.0].into_iter()), 0);
    }

    #[test]
    fn stderr_is_the_sample_stderr() {
        // statistics.stdev([1, 0, 0, 1]) / sqrt(4)
        let a = mean_stderr(&[1.0, 0.0, 0.0, 1.0]);
        assert!((a - 0.28867513459481287).abs() < 1e-15, "{a}");
    }
}
