//! A task's Jinja fields, evaluated as lm-evaluation-harness evaluates them (jinja2 with
//! `StrictUndefined` and `keep_trailing_newline`), with minijinja.
//!
//! lm-eval's rules: a field that names a column of the document is that column's value; any
//! other string is a template. Choices and targets are rendered and then read back as Python
//! literals; here they are written as one `{{ expression }}` and evaluated to a value directly,
//! which gives the same list or number without a round trip through Python's repr.

use anyhow::{anyhow, bail, Result};
use minijinja::value::Value as JValue;
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value};

pub type Doc = Map<String, Value>;

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_unknown_method_callback(python_methods);
        env.add_filter("hellaswag_preprocess", hellaswag_preprocess);
        env.add_filter("regex_replace", regex_replace);
        Templates { env }
    }

    /// A text field (`doc_to_text`, `description`): the named column, or the rendered template.
    pub fn text(&self, field: &str, src: &str, doc: &Doc) -> Result<String> {
        if let Some(v) = doc.get(src) {
            return match v {
                Value::String(s) => Ok(s.clone()),
                other => Ok(other.to_string()),
            };
        }
        self.env
            .render_str(src, JValue::from_serialize(doc))
            .map_err(|e| anyhow!("{field}: {}", describe(&e)))
    }

    /// A value field (`doc_to_choice`, `doc_to_target`, …): the named column, the value of a
    /// template that is one `{{ expression }}`, or else the rendered text (a number when it is
    /// all digits, as lm-eval reads targets).
    pub fn value(&self, field: &str, src: &str, doc: &Doc) -> Result<Value> {
        if let Some(v) = doc.get(src) {
            return Ok(v.clone());
        }
        if let Some(expr) = whole_expression(src) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| anyhow!("{field}: {}", describe(&e)))?;
            let v = compiled
                .eval(JValue::from_serialize(doc))
                .map_err(|e| anyhow!("{field}: {}", describe(&e)))?;
            return serde_json::to_value(&v).map_err(|e| anyhow!("{field}: {e}"));
        }
        let text = self.text(field, src, doc)?;
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Value::from(n));
            }
        }
        Ok(Value::String(text))
    }

    pub fn strings(&self, field: &str, src: &str, doc: &Doc) -> Result<Vec<String>> {
        match self.value(field, src, doc)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => bail!("{field}: expected a list of strings, found {other}"),
                })
                .collect(),
            other => bail!("{field}: expected a list of strings, found {other}"),
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// `{{ expr }}` with nothing around it.
fn whole_expression(src: &str) -> Option<&str> {
    let inner = src.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// Python's methods on values in templates (`s.strip()`, `d.items()`, …) as minijinja-contrib
/// provides them, plus `list.index(x)`, which lm-eval's ARC task uses.
fn python_methods(
    state: &State,
    value: &JValue,
    method: &str,
    args: &[JValue],
) -> Result<JValue, Error> {
    if method == "index" && value.as_object().is_some() && value.as_str().is_none() {
        if let [needle] = args {
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if &item == needle {
                        return Ok(JValue::from(i));
                    }
                }
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{needle} is not in list"),
                ));
            }
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// lm-eval's HellaSwag cleaning: strip, WikiHow's ` [title]` to `. `, drop other `[…]` markers,
/// collapse double spaces once.
fn hellaswag_preprocess(text: String) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let text = bracketed().replace_all(&text, "");
    text.replace("  ", " ")
}

fn bracketed() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\[.*?\]").expect("a valid regex"))
}

/// lm-eval's `regex_replace` filter (Python `re.sub`).
fn regex_replace(text: String, pattern: String, replacement: String) -> Result<String, Error> {
    let re = regex::Regex::new(&pattern)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(re.replace_all(&text, replacement.as_str()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Doc {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fields_templates_and_expressions() -> Result<()> {
        let t = Templates::new();
        let d = doc(json!({
            "question_de": "Warum?",
            "choices_de": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
            "answerKey": "B",
            "answer": 2,
            "subject": "high_school_physics",
        }));
        assert_eq!(
            t.text("doc_to_text", "Frage: {{question_de}}\nAntwort:", &d)?,
            "Frage: Warum?\nAntwort:"
        );
        assert_eq!(
            t.value("doc_to_target", "{{choices_de.label.index(answerKey)}}", &d)?,
            json!(1)
        );
        assert_eq!(t.value("doc_to_target", "answer", &d)?, json!(2));
        assert_eq!(
            t.strings("doc_to_choice", "{{choices_de.text}}", &d)?,
            ["a", "b", "c"]
        );
        assert_eq!(
            t.text(
                "description",
                "über {{subject | replace('_', ' ')}}.\n\n",
                &d
            )?,
            "über high school physics.\n\n"
        );
        assert_eq!(
            t.text("x", "{{ question_de.strip().upper() }}", &d)?,
            "WARUM?"
        );
        // Strict: a missing field is an error that names the template's field.
        let err = t
            .text("doc_to_text", "{{missing}}", &d)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("doc_to_text:"), "{err}");
        Ok(())
    }

    #[test]
    fn hellaswag_cleaning_matches_lm_eval() {
        assert_eq!(
            hellaswag_preprocess(" Sport [title] Wie man läuft. [step]  Zuerst  ".into()),
            // As CPython's `re.sub` and `str.replace` leave it: one pass over double spaces.
            "Sport. Wie man läuft.  Zuerst"
        );
    }
}
