//! The scores as FastChat's `show_result.py` computes them in single-answer mode: verdicts
//! scoring -1 (unparsable) are dropped, then each figure is the mean of the remaining scores —
//! `average` over both turns' verdicts together, not the mean of the two turn means.

use std::collections::BTreeMap;

use serde::Serialize;

/// Mean scores of one set of verdicts; `None` where there is no parsed verdict to average.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    pub first_turn: Option<f64>,
    pub second_turn: Option<f64>,
    pub average: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    pub questions: usize,
    /// Verdicts received (parsed or not).
    pub judged: usize,
    /// Verdicts without a score (-1), left out of the means.
    pub unparsed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeInfo {
    pub model: String,
    pub base_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub first_turn: Option<f64>,
    pub second_turn: Option<f64>,
    pub average: Option<f64>,
    pub per_category: BTreeMap<String, Scores>,
    pub counts: Counts,
    /// `question_id/turn` of each unparsable verdict.
    pub unparsed: Vec<String>,
    pub judge: JudgeInfo,
}

/// One verdict as the report sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub question_id: &'a str,
    pub category: &'a str,
    pub turn: u8,
    pub score: f64,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn scores<'a>(vs: impl Iterator<Item = &'a Verdict<'a>> + Clone) -> Scores {
    let parsed = vs.filter(|v| v.score != -1.0);
    Scores {
        first_turn: mean(parsed.clone().filter(|v| v.turn == 1).map(|v| v.score)),
        second_turn: mean(parsed.clone().filter(|v| v.turn == 2).map(|v| v.score)),
        average: mean(parsed.map(|v| v.score)),
    }
}

pub fn aggregate(verdicts: &[Verdict<'_>], questions: usize, judge: JudgeInfo) -> Report {
    let all = scores(verdicts.iter());
    let mut categories: Vec<&str> = verdicts.iter().map(|v| v.category).collect();
    categories.sort_unstable();
    categories.dedup();
    let per_category = categories
        .into_iter()
        .map(|c| {
            (
                c.to_string(),
                scores(verdicts.iter().filter(move |v| v.category == c)),
            )
        })
        .collect();
    let unparsed: Vec<String> = verdicts
        .iter()
        .filter(|v| v.score == -1.0)
        .map(|v| format!("{}/{}", v.question_id, v.turn))
        .collect();
    Report {
        first_turn: all.first_turn,
        second_turn: all.second_turn,
        average: all.average,
        per_category,
        counts: Counts {
            questions,
            judged: verdicts.len(),
            unparsed: unparsed.len(),
        },
        unparsed,
        judge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsed_verdicts_are_counted_and_left_out_of_every_mean() {
        let v = |q, category, turn, score| Verdict {
            question_id: q,
            category,
            turn,
            score,
        };
        let verdicts = [
            v("81", "writing", 1, 8.0),
            v("81", "writing", 2, 6.0),
            v("82", "writing", 1, 3.0),
            v("82", "writing", 2, -1.0),
            v("111", "math", 1, 2.0),
            v("111", "math", 2, 5.0),
        ];
        let judge = JudgeInfo {
            model: "gpt-4".into(),
            base_url: "https://api.openai.com/v1".into(),
        };
        let r = aggregate(&verdicts, 3, judge);
        assert_eq!(r.first_turn, Some((8.0 + 3.0 + 2.0) / 3.0));
        assert_eq!(r.second_turn, Some((6.0 + 5.0) / 2.0));
        // The mean of all parsed verdicts (24 / 5), not of the two turn means.
        assert_eq!(r.average, Some(24.0 / 5.0));
        assert_eq!(
            r.per_category["writing"],
            Scores {
                first_turn: Some(5.5),
                second_turn: Some(6.0),
                average: Some(17.0 / 3.0)
            }
        );
        assert_eq!(r.per_category["math"].average, Some(3.5));
        assert_eq!(
            r.counts,
            Counts {
                questions: 3,
                judged: 6,
                unparsed: 1
            }
        );
        assert_eq!(r.unparsed, ["82/2"]);
        let empty = aggregate(&[v("83", "stem", 1, -1.0)], 1, r.judge.clone());
        assert_eq!(
            (empty.average, empty.per_category["stem"].first_turn),
            (None, None)
        );
    }
}
