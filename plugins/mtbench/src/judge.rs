//! The judge's side of MT-Bench as FastChat defines it (`fastchat/llm_judge/common.py`): which
//! prompt judges which turn, how a prompt template is filled, and how a score is read back out
//! of the verdict.
//!
//! - Turn 1 is judged with `single-v1`, turn 2 with `single-v1-multi-turn` (the whole
//!   conversation, the judge told to rate the second answer);
//! - a question with reference answers (FastChat: categories math, reasoning, coding) uses the
//!   `single-math-v1*` variants, which show the reference beside the answer;
//! - the judge gets `[system_prompt, prompt_template filled]` at temperature 0;
//! - the score is the first `[[n]]` in the verdict, else the first `[n]`; a verdict with neither
//!   scores -1 (FastChat's value), is kept, counted and left out of every average.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;

use crate::questions::Question;

/// FastChat's categories whose questions carry reference answers.
pub const NEED_REFERENCE: &[&str] = &["math", "reasoning", "coding"];

/// One entry of `judge_prompts*.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JudgePrompt {
    pub system_prompt: String,
    pub prompt_template: String,
}

/// The judge prompts by name (`single-v1`, `single-math-v1-multi-turn`, …).
#[derive(Debug, Clone)]
pub struct JudgePrompts(BTreeMap<String, JudgePrompt>);

/// A chat message in OpenAI's request layout (leo-chat's wire type, which `leo serve` reads).
pub use leo_chat::ChatMessage as Message;

/// What to ask the judge about one turn of one answered question.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    /// The judge prompt's name, e.g. `single-math-v1-multi-turn`.
    pub prompt_name: String,
    pub messages: Vec<Message>,
}

impl JudgePrompts {
    /// Reads FastChat's object layout (`{"single-v1": {system_prompt, prompt_template}, …}`)
    /// or its JSONL layout (one object per line with a `name`).
    /// `path` may be a folder holding `judge_prompts_de.json` or `judge_prompts.jsonl`.
    pub fn load(path: &Path) -> Result<JudgePrompts> {
        let path = if path.is_dir() {
            [
                "judge_prompts_de.json",
                "judge_prompts.jsonl",
                "judge_prompts.json",
            ]
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} is a folder without judge_prompts_de.json or judge_prompts.jsonl",
                    path.display()
                )
            })?
        } else {
            path.to_path_buf()
        };
        let path = path.as_path();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading judge prompts {}", path.display()))?;
        JudgePrompts::parse(&text).with_context(|| format!("judge prompts {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<JudgePrompts> {
        let trimmed = text.trim_start();
        let map: BTreeMap<String, JudgePrompt> = match serde_json::from_str(trimmed) {
            Ok(map) => map,
            Err(object_err) => {
                #[derive(Deserialize)]
                struct Named {
                    name: String,
                    #[serde(flatten)]
                    prompt: JudgePrompt,
                }
                let mut map = BTreeMap::new();
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let named: Named = serde_json::from_str(line).with_context(|| {
                        format!("line {}: neither a JSON object of prompts ({object_err}) nor a JSONL line with name, system_prompt, prompt_template", i + 1)
                    })?;
                    map.insert(named.name, named.prompt);
                }
                map
            }
        };
        let prompts = JudgePrompts(map);
        for name in [
            "single-v1",
            "single-v1-multi-turn",
            "single-math-v1",
            "single-math-v1-multi-turn",
        ] {
            let p = prompts.get(name)?;
            // A template naming a field we never fill would fail at the first question; say so
            // before any answer is generated.
            for field in placeholders(&p.prompt_template)? {
                if !KNOWN_FIELDS.contains(&field.as_str()) {
                    bail!("`{name}`.prompt_template has the placeholder {{{field}}}, which MT-Bench does not fill (known: {})", KNOWN_FIELDS.join(", "));
                }
            }
        }
        Ok(prompts)
    }

    pub fn get(&self, name: &str) -> Result<&JudgePrompt> {
        self.0.get(name).with_context(|| {
            format!(
                "no judge prompt `{name}` (there are: {})",
                self.0.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The judge request for `turn` (1 or 2) of `question` answered with `answers`, as
    /// FastChat builds it (`run_judge_single`).
    pub fn request(
        &self,
        question: &Question,
        answers: &[String; 2],
        turn: u8,
    ) -> Result<JudgeRequest> {
        let math = question.reference.is_some();
        let name = match (math, turn) {
            (false, 1) => "single-v1",
            (false, 2) => "single-v1-multi-turn",
            (true, 1) => "single-math-v1",
            (true, 2) => "single-math-v1-multi-turn",
            _ => bail!("MT-Bench has turns 1 and 2, not {turn}"),
        };
        let prompt = self.get(name)?;
        let mut fields: Vec<(&str, &str)> = Vec::new();
        if turn == 1 {
            fields.push(("question", &question.turns[0]));
            fields.push(("answer", &answers[0]));
        } else {
            fields.push(("question_1", &question.turns[0]));
            fields.push(("question_2", &question.turns[1]));
            fields.push(("answer_1", &answers[0]));
            fields.push(("answer_2", &answers[1]));
        }
        if let Some(reference) = &question.reference {
            fields.push(("ref_answer_1", &reference[0]));
            fields.push(("ref_answer_2", &reference[1]));
        }
        let user = format_template(&prompt.prompt_template, &fields)
            .with_context(|| format!("filling judge prompt `{name}`"))?;
        Ok(JudgeRequest {
            prompt_name: name.to_string(),
            messages: vec![
                Message::new("system", prompt.system_prompt.clone()),
                Message::new("user", user),
            ],
        })
    }
}

/// The placeholders FastChat's single-answer grading fills.
const KNOWN_FIELDS: &[&str] = &[
    "question",
    "answer",
    "question_1",
    "question_2",
    "answer_1",
    "answer_2",
    "ref_answer_1",
    "ref_answer_2",
];

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

/// Python's `str.format` over named fields, the way FastChat fills its templates: `{name}` is
/// replaced, `{{` and `}}` stand for braces, and what is filled in is never scanned again (an
/// answer containing `{question}` stays as it is).
pub fn format_template(template: &str, fields: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 1024);
    for piece in parse_template(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(name) => match fields.iter().find(|(k, _)| *k == name) {
                Some((_, v)) => out.push_str(v),
                None => bail!("the template's placeholder {{{name}}} has no value here"),
            },
        }
    }
    Ok(out)
}

fn placeholders(template: &str) -> Result<Vec<String>> {
    Ok(parse_template(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Field(f) => Some(f.to_string()),
            Piece::Text(_) => None,
        })
        .collect())
}

fn parse_template(template: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let bytes = template.as_bytes();
    let (mut i, mut start) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'}' if bytes.get(i + 1) == Some(&bytes[i]) => {
                pieces.push(Piece::Text(&template[start..=i]));
                i += 2;
                start = i;
            }
            b'{' => {
                pieces.push(Piece::Text(&template[start..i]));
                let Some(len) = template[i + 1..].find('}') else {
                    bail!("unclosed `{{` at byte {i} of the template");
                };
                let name = &template[i + 1..i + 1 + len];
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    bail!("`{{{name}}}` at byte {i} of the template is not a field name");
                }
                pieces.push(Piece::Field(name));
                i += len + 2;
                start = i;
            }
            b'}' => bail!("single `}}` at byte {i} of the template (write `}}}}`)"),
            _ => i += 1,
        }
    }
    pieces.push(Piece::Text(&template[start..]));
    Ok(pieces)
}

static DOUBLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[(\d+\.?\d*)\]\]").unwrap_or_else(|e| panic!("static regex: {e}"))
});
static SINGLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[(\d+\.?\d*)\]").unwrap_or_else(|e| panic!("static regex: {e}"))
});

/// The score FastChat reads out of a verdict: the first `[[n]]`, else the first `[n]`, else
/// -1 (unparsable).
pub fn parse_score(verdict: &str) -> f64 {
    [&*DOUBLE, &*SINGLE]
        .iter()
        .find_map(|re| re.captures(verdict))
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<f64>().ok())
        .unwrap_or(-1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> Option<std::path::PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/mt-bench-de")
            .join(name);
        if path.exists() {
            return Some(path);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing (CI=true: the shared data must be there)",
            path.display()
        );
        eprintln!("skipping: {} is missing", path.display());
        None
    }

    #[test]
    fn verdicts_score_like_fastchat() {
        assert_eq!(parse_score("Gut erklärt. Bewertung: [[7]]"), 7.0);
        assert_eq!(parse_score("Bewertung: [[8.5]] und [[2]]"), 8.5);
        // `[[n]]` wins over an earlier `[n]`.
        assert_eq!(parse_score("Schritt [1] … Bewertung: [[6]]"), 6.0);
        assert_eq!(parse_score("Bewertung: [4]"), 4.0);
        assert_eq!(parse_score("Bewertung: [[10]]"), 10.0);
        assert_eq!(parse_score("Bewertung: 7/10"), -1.0);
        assert_eq!(parse_score("[[Bewertung]]"), -1.0);
        assert_eq!(parse_score(""), -1.0);
        // FastChat's pattern takes `7.` as a number too.
        assert_eq!(parse_score("[[7.]]"), 7.0);
    }

    #[test]
    fn templates_fill_like_python_str_format() {
        let t = "A {x} {{literal}} {y}!";
        assert_eq!(
            format_template(t, &[("x", "{y}"), ("y", "2")]).unwrap(),
            "A {y} {literal} 2!"
        );
        assert!(format_template("{z}", &[("x", "1")])
            .unwrap_err()
            .to_string()
            .contains("{z}"));
        assert!(format_template("a } b", &[]).is_err());
        assert!(format_template("a {b", &[]).is_err());
    }

    #[test]
    fn the_german_prompts_are_chosen_and_filled_as_fastchat_does() {
        let Some(path) = shared("judge_prompts_de.json") else {
            return;
        };
        let prompts = JudgePrompts::load(&path).unwrap();
        let plain = Question {
            id: "81".into(),
            category: "writing".into(),
            turns: ["Frage eins {answer}".into(), "Frage zwei".into()],
            reference: None,
        };
        let answers = ["Antwort eins".to_string(), "Antwort zwei".to_string()];
        let r1 = prompts.request(&plain, &answers, 1).unwrap();
        assert_eq!(r1.prompt_name, "single-v1");
        assert_eq!(r1.messages[0].role, "system");
        assert_eq!(
            r1.messages[0].content,
            "Sie sind ein hilfreicher Assistent."
        );
        let user = &r1.messages[1].content;
        assert!(user.starts_with("[Anweisung]\nBitte handeln Sie als unparteiischer Richter"));
        assert!(user.ends_with(
            "[Frage]\nFrage eins {answer}\n\n[Der Beginn der Antwort des Assistenten]\nAntwort eins\n[Das Ende der Antwort des Assistenten]"
        ));
        assert!(!user.contains("Frage zwei") && !user.contains("Antwort zwei"));

        let r2 = prompts.request(&plain, &answers, 2).unwrap();
        assert_eq!(r2.prompt_name, "single-v1-multi-turn");
        assert!(r2.messages[0]
            .content
            .contains("auf die zweite Benutzerfrage konzentrieren"));
        assert!(r2.messages[1].content.contains(
            "### Benutzer:\nFrage eins {answer}\n\n### Assistant A:\nAntwort eins\n\n### Benutzer:\nFrage zwei\n\n### Assistant A:\nAntwort zwei\n\n<|Das Ende"
        ));

        let math = Question {
            id: "111".into(),
            category: "math".into(),
            turns: ["Rechne".into(), "Weiter".into()],
            reference: Some(["Ref eins".into(), "Ref zwei".into()]),
        };
        let m1 = prompts.request(&math, &answers, 1).unwrap();
        assert_eq!(m1.prompt_name, "single-math-v1");
        assert!(m1.messages[1].content.contains(
            "[Der Beginn der Referenzantwort]\nRef eins\n[Das Ende der Referenzantwort]"
        ));
        assert!(!m1.messages[1].content.contains("Ref zwei"));
        let m2 = prompts.request(&math, &answers, 2).unwrap();
        assert_eq!(m2.prompt_name, "single-math-v1-multi-turn");
        let user = &m2.messages[1].content;
        assert!(user.contains("### Referenzantwort:\nRef eins\n\n### Benutzer:\nWeiter\n\n### Referenzantwort:\nRef zwei"));
        assert!(user.contains("### Assistant A:\nAntwort zwei"));
        assert!(prompts.request(&math, &answers, 3).is_err());
    }

    #[test]
    fn prompts_with_unknown_placeholders_are_refused_when_read() {
        let p = |t: &str| serde_json::json!({"system_prompt": "s", "prompt_template": t});
        let mut all = serde_json::json!({
            "single-v1": p("{question} {answer}"),
            "single-v1-multi-turn": p("{question_1}"),
            "single-math-v1": p("{ref_answer_1}"),
            "single-math-v1-multi-turn": p("{ref_answer_2}"),
        });
        assert!(JudgePrompts::parse(&all.to_string()).is_ok());
        all["single-v1"] = p("{frage}");
        let e = JudgePrompts::parse(&all.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("{frage}"), "{e}");
        let lines =
            r#"{"name": "single-v1", "system_prompt": "s", "prompt_template": "{question}"}"#;
        let e = JudgePrompts::parse(lines).unwrap_err().to_string();
        assert!(e.contains("single-v1-multi-turn"), "{e}");
    }
}
