//! The stage's params, checked in `describe` so that a typo fails `leo validate` with the field
//! named, not an attempt an hour into answer generation.

use std::collections::BTreeMap;

use leo_plugin::ParamError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The judge: any OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeParams {
    /// Up to and including the API version, as OpenAI's clients take it
    /// (`https://api.openai.com/v1`); requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a bearer token). The key
    /// itself is read when the stage runs and never written anywhere.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// FastChat's judge budget.
    #[serde(default = "default_judge_max_tokens")]
    pub max_tokens: u32,
    /// Per request, connection included.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Retries after the first try, for 429, 5xx and connection errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_judge_max_tokens() -> u32 {
    2048
}
fn default_timeout_s() -> f64 {
    300.0
}
fn default_max_retries() -> u32 {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// bfloat16 on CUDA, float32 on the CPU.
    #[default]
    Auto,
    Float32,
    Bfloat16,
    Float16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when available, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub judge: JudgeParams,
    /// Per turn (LEOLM.md, FastChat: 1024).
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Sampling temperature per category, over FastChat's defaults ([`default_temperature`]).
    #[serde(default)]
    pub temperature: BTreeMap<String, f64>,
    /// Only the first N (selected) questions.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only these categories (all when empty).
    #[serde(default)]
    pub categories: Vec<String>,
    /// With the question id and turn, seeds each answer's sampling.
    #[serde(default)]
    pub seed: u64,
    /// A system message before the first question; without one the chat template decides (the
    /// sft stage's inserts LeoLM's German default).
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub dtype: Dtype,
    #[serde(default)]
    pub device: DeviceChoice,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[serde(default)]
    pub threads: Option<i32>,
}

const KEYS: &[&str] = &[
    "judge",
    "max_new_tokens",
    "temperature",
    "limit",
    "categories",
    "seed",
    "system_prompt",
    "dtype",
    "device",
    "threads",
];

fn default_max_new_tokens() -> usize {
    1024
}

/// FastChat's `temperature_config` (MT-Bench-DE keeps it): creative categories sample, the rest
/// is close to or exactly greedy.
pub fn default_temperature(category: &str) -> f64 {
    match category {
        "writing" | "roleplay" => 0.7,
        "stem" | "humanities" => 0.1,
        _ => 0.0,
    }
}

impl Params {
    pub fn parse(params: &Value) -> Result<Params, ParamError> {
        let value = match params {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        };
        if !value.is_object() {
            return Err(ParamError::new("", "params must be a table"));
        }
        if let Some(unknown) = value
            .as_object()
            .and_then(|m| m.keys().find(|k| !KEYS.contains(&k.as_str())))
        {
            return Err(ParamError::new(
                unknown.clone(),
                format!("unknown param; the stage's params are {}", KEYS.join(", ")),
            ));
        }
        if value.get("judge").is_none() {
            return Err(ParamError::new(
                "judge",
                "missing: the judge endpoint, e.g. judge = { base_url = \"https://api.openai.com/v1\", model = \"gpt-4\", api_key_env = \"OPENAI_API_KEY\" }",
            ));
        }
        let p: Params = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            ParamError::new(
                if field == "." { String::new() } else { field },
                e.inner().to_string(),
            )
        })?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), ParamError> {
        let j = &self.judge;
        match reqwest::Url::parse(&j.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(ParamError::new(
                        "judge.base_url",
                        "must not carry credentials: name an environment variable in judge.api_key_env",
                    ));
                }
            }
            Ok(_) => {
                return Err(ParamError::new(
                    "judge.base_url",
                    "must be an http:// or https:// URL with a host",
                ))
            }
            Err(e) => return Err(ParamError::new("judge.base_url", format!("not a URL: {e}"))),
        }
        if j.model.trim().is_empty() {
            return Err(ParamError::new("judge.model", "must not be empty"));
        }
        if let Some(name) = &j.api_key_env {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ParamError::new(
                    "judge.api_key_env",
                    "must be the name of an environment variable (letters, digits, _), not the key itself",
                ));
            }
        }
        if j.max_tokens == 0 {
            return Err(ParamError::new("judge.max_tokens", "must be positive"));
        }
        if !(j.timeout_s > 0.0 && j.timeout_s.is_finite()) {
            return Err(ParamError::new(
                "judge.timeout_s",
                "must be a positive number of seconds",
            ));
        }
        if self.max_new_tokens == 0 {
            return Err(ParamError::new("max_new_tokens", "must be positive"));
        }
        for (category, t) in &self.temperature {
            if !(*t >= 0.0 && t.is_finite()) {
                return Err(ParamError::new(
                    format!("temperature.{category}"),
                    "must be a number >= 0 (0 = greedy)",
                ));
            }
        }
        if self.limit == Some(0) {
            return Err(ParamError::new(
                "limit",
                "must be positive (leave it out for all questions)",
            ));
        }
        if self.threads.is_some_and(|t| t <= 0) {
            return Err(ParamError::new("threads", "must be positive"));
        }
        Ok(())
    }

    /// The sampling temperature of a category's answers.
    pub fn temperature_for(&self, category: &str) -> f64 {
        self.temperature
            .get(category)
            .copied()
            .unwrap_or_else(|| default_temperature(category))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(v: Value) -> Option<String> {
        Params::parse(&v).err().map(|e| e.field)
    }

    #[test]
    fn defaults_are_fastchats_and_errors_name_the_field() {
        let judge = json!({"base_url": "http://127.0.0.1:8000/v1", "model": "gpt-4"});
        let p = Params::parse(&json!({"judge": judge, "temperature": {"math": 0.3}})).unwrap();
        assert_eq!(p.judge.max_tokens, 2048);
        assert_eq!(p.max_new_tokens, 1024);
        assert_eq!(p.temperature_for("writing"), 0.7);
        assert_eq!(p.temperature_for("humanities"), 0.1);
        assert_eq!(p.temperature_for("coding"), 0.0);
        assert_eq!(p.temperature_for("math"), 0.3);

        assert_eq!(field(json!({})), Some("judge".into()));
        assert_eq!(
            field(json!({"judge": {"base_url": "ftp://x", "model": "m"}})),
            Some("judge.base_url".into())
        );
        assert_eq!(
            field(json!({"judge": {"base_url": "https://u:p@x/v1", "model": "m"}})),
            Some("judge.base_url".into())
        );
        assert_eq!(
            field(json!({"judge": {"model": "m"}})),
            Some("judge".into())
        );
        assert_eq!(
            field(
                json!({"judge": {"base_url": "http://x/v1", "model": "m", "api_key_env": "sk-123-abc"}})
            ),
            Some("judge.api_key_env".into())
        );
        assert_eq!(
            field(json!({"judge": {"base_url": "http://x/v1", "model": "m", "timeout_s": 0}})),
            Some("judge.timeout_s".into())
        );
        assert_eq!(
            field(json!({"judge": {"base_url": "http://x/v1", "model": "m", "max_tokens": "a"}})),
            Some("judge.max_tokens".into())
        );
        assert_eq!(
            field(json!({"judge": judge, "temperature": {"writing": -1}})),
            Some("temperature.writing".into())
        );
        assert_eq!(
            field(json!({"judge": judge, "limit": 0})),
            Some("limit".into())
        );
        assert_eq!(
            field(json!({"judge": judge, "dtype": "f8"})),
            Some("dtype".into())
        );
        assert_eq!(field(json!({"judge": judge, "lr": 1})), Some("lr".into()));
        assert!(Params::parse(&json!({"judge": judge, "dtype": "bfloat16", "device": "cpu", "categories": ["math"], "limit": 3})).is_ok());
    }
}
