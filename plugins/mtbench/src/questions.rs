//! MT-Bench questions in the two layouts they are published in: FastEval's object keyed by
//! question id (`{"81": {category, turns, reference?}, …}`, MT-Bench-DE's `questions_de.json`)
//! and FastChat's JSONL (`{"question_id": 81, "category", "turns", "reference"?}` per line).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The id as the file writes it (`"81"`); numeric ids are written back as numbers.
    pub id: String,
    pub category: String,
    pub turns: [String; 2],
    /// Reference answers for both turns (math, reasoning, coding).
    pub reference: Option<[String; 2]>,
}

#[derive(Deserialize)]
struct Raw {
    category: String,
    turns: Vec<String>,
    #[serde(default)]
    reference: Option<Vec<String>>,
}

/// Reads the questions, in the file's order for JSONL and by numeric id for the object layout
/// (FastEval's keys are "81".."160": JSON objects have no order a reader must keep).
pub fn load(path: &Path) -> Result<Vec<Question>> {
    let file = if path.is_dir() {
        ["questions_de.json", "question.jsonl", "questions.json"]
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} is a folder without questions_de.json, question.jsonl or questions.json",
                    path.display()
                )
            })?
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading questions {}", file.display()))?;
    parse(&text).with_context(|| format!("questions {}", file.display()))
}

pub fn parse(text: &str) -> Result<Vec<Question>> {
    let mut out = Vec::new();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) if !map.contains_key("question_id") => {
            for (id, v) in map {
                let raw: Raw = serde_json::from_value(v)
                    .with_context(|| format!("question {id}: needs category and turns"))?;
                out.push(question(id, raw)?);
            }
            out.sort_by_key(|a| order_key(&a.id));
        }
        _ => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let ctx = || format!("line {}", i + 1);
                let v: Value = serde_json::from_str(line).with_context(ctx)?;
                let id = match v.get("question_id") {
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::String(s)) => s.clone(),
                    _ => bail!("line {}: no question_id (a number or a string)", i + 1),
                };
                let raw: Raw = serde_json::from_value(v).with_context(|| {
                    format!("line {} (question {id}): needs category and turns", i + 1)
                })?;
                out.push(question(id, raw)?);
            }
        }
    }
    if out.is_empty() {
        bail!("no questions");
    }
    let mut seen = std::collections::BTreeSet::new();
    for q in &out {
        if !seen.insert(&q.id) {
            bail!("question id {} appears twice", q.id);
        }
    }
    Ok(out)
}

fn order_key(id: &str) -> (u8, u64, String) {
    match id.parse::<u64>() {
        Ok(n) => (0, n, String::new()),
        Err(_) => (1, 0, id.to_string()),
    }
}

fn question(id: String, raw: Raw) -> Result<Question> {
    let two = |v: Vec<String>, what: &str| -> Result<[String; 2]> {
        let n = v.len();
        <[String; 2]>::try_from(v)
            .map_err(|_| anyhow::anyhow!("question {id}: {what} has {n} entries, MT-Bench has 2"))
    };
    Ok(Question {
        turns: two(raw.turns, "turns")?,
        reference: raw.reference.map(|r| two(r, "reference")).transpose()?,
        category: raw.category,
        id,
    })
}

/// The questions a stage asks: those of `categories` (all when empty), the first `limit`.
pub fn select(all: Vec<Question>, categories: &[String], limit: Option<usize>) -> Vec<Question> {
    all.into_iter()
        .filter(|q| categories.is_empty() || categories.contains(&q.category))
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// The id as FastChat writes `question_id`: a number when it is one.
pub fn id_json(id: &str) -> Value {
    id.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_read_the_same_questions() {
        let object = r#"{"82": {"category": "math", "turns": ["a", "b"], "reference": ["r1", "r2"]},
                         "81": {"category": "writing", "turns": ["c", "d"]}}"#;
        let jsonl = "{\"question_id\": 81, \"category\": \"writing\", \"turns\": [\"c\", \"d\"]}\n\
                     {\"question_id\": 82, \"category\": \"math\", \"turns\": [\"a\", \"b\"], \"reference\": [\"r1\", \"r2\"]}\n";
        let a = parse(object).unwrap();
        assert_eq!(a, parse(jsonl).unwrap());
        assert_eq!(a[0].id, "81");
        assert_eq!(a[1].reference, Some(["r1".into(), "r2".into()]));
        assert_eq!(id_json("81"), serde_json::json!(81));
        let e = parse(r#"{"81": {"category": "x", "turns": ["one"]}}"#).unwrap_err();
        assert!(format!("{e:#}").contains("question 81"), "{e:#}");
        assert!(parse("{\"category\": \"x\"}\n").is_err());
        let picked = select(a, &["math".into()], Some(5));
        assert_eq!(picked.len(), 1);
    }
}
