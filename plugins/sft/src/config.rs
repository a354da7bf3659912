//! The stage's data params: which datasets, how they are mixed, rendered, masked and packed.
//! The trainer's params (optimizer, schedule, …) live in their own struct; this one is
//! complete by itself so that the data side can be checked and tested alone.
//!
//! Defaults follow LeoLM's chat models where they are known (LEOLM.md, "Chat SFT"): LeoLM's
//! German system prompt, the loss on all tokens, ~1% held out, 8192-token rows (LeoLM's
//! context length; the SFT sequence length is not published).

use leo_plugin::ParamError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::chatml::{ChatFormat, LEOLM_SYSTEM_PROMPT};
use crate::encode::LossOn;
use crate::formats::{Format, OnMalformed};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataParams {
    /// The datasets of the mix, each a stage input.
    pub datasets: Vec<DatasetParams>,
    /// The system message of conversations without one: a string, or `false` for none.
    /// Default: LeoLM's German system prompt.
    #[serde(
        serialize_with = "system_prompt_out",
        deserialize_with = "system_prompt_in"
    )]
    pub system_prompt: Option<String>,
    /// `all` (every token but BOS, as LeoLM trained) or `assistant` (assistant turns only).
    pub loss_on: LossOn,
    /// The share of each dataset held out for validation, by a hash of (input, id).
    pub validation_fraction: f64,
    /// Tokens per packed row.
    pub seq_len: usize,
    /// Selects and orders the weighted mix.
    pub seed: u64,
    /// `skip` (count and report malformed records, go on) or `fail`.
    pub on_malformed: OnMalformed,
}

/// One dataset of the mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetParams {
    /// The name of the stage input holding it (a file or a folder).
    pub input: String,
    /// `auto`, `oasst`, `sharegpt` or `instruction`.
    #[serde(default = "auto")]
    pub format: Format,
    /// Times each conversation is seen per epoch: 0.5 a seeded half, 2.5 twice plus a half.
    #[serde(default = "one")]
    pub weight: f64,
}

fn auto() -> Format {
    Format::Auto
}

fn one() -> f64 {
    1.0
}

impl Default for DataParams {
    fn default() -> Self {
        DataParams {
            datasets: Vec::new(),
            system_prompt: Some(LEOLM_SYSTEM_PROMPT.to_string()),
            loss_on: LossOn::All,
            validation_fraction: 0.01,
            seq_len: 8192,
            seed: 0,
            on_malformed: OnMalformed::Skip,
        }
    }
}

fn system_prompt_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prompt {
        Text(String),
        Flag(bool),
    }
    match Prompt::deserialize(d) {
        Ok(Prompt::Text(s)) => Ok(Some(s)),
        Ok(Prompt::Flag(false)) => Ok(None),
        Ok(Prompt::Flag(true)) | Err(_) => Err(serde::de::Error::custom(
            "must be a string, or false for no system message",
        )),
    }
}

fn system_prompt_out<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(text) => s.serialize_str(text),
        None => s.serialize_bool(false),
    }
}

impl DataParams {
    /// Parses and checks `params`; errors name the field (`datasets[1].weight`).
    pub fn from_params(params: &Value) -> Result<DataParams, ParamError> {
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            params.clone()
        };
        let p: DataParams = serde_path_to_error::deserialize(params).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            ParamError::new(field, e.into_inner().to_string())
        })?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), ParamError> {
        if self.datasets.is_empty() {
            return Err(ParamError::new(
                "datasets",
                "name at least one dataset, e.g. [{ input = \"oasst_de\" }]",
            ));
        }
        for (i, d) in self.datasets.iter().enumerate() {
            if d.input.is_empty() {
                return Err(ParamError::new(
                    format!("datasets[{i}].input"),
                    "must name a stage input",
                ));
            }
            if let Some(j) = self.datasets[..i].iter().position(|e| e.input == d.input) {
                return Err(ParamError::new(
                    format!("datasets[{i}].input"),
                    format!(
                        "`{}` is already datasets[{j}]; give it a larger weight instead",
                        d.input
                    ),
                ));
            }
            if !d.weight.is_finite() || d.weight <= 0.0 {
                return Err(ParamError::new(
                    format!("datasets[{i}].weight"),
                    "must be a positive number (1.0: each conversation once per epoch)",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(ParamError::new(
                "validation_fraction",
                "must be at least 0 and below 1",
            ));
        }
        if !(2..=i32::MAX as usize).contains(&self.seq_len) {
            return Err(ParamError::new(
                "seq_len",
                format!("must be between 2 and {}", i32::MAX),
            ));
        }
        Ok(())
    }

    /// The ChatML rendering these params ask for.
    pub fn chat_format(&self) -> ChatFormat {
        ChatFormat {
            system_prompt: self.system_prompt.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_leolms() {
        let p =
            DataParams::from_params(&json!({"datasets": [{"input": "oasst_de"}]})).expect("params");
        assert_eq!(
            p.datasets,
            [DatasetParams {
                input: "oasst_de".into(),
                format: Format::Auto,
                weight: 1.0
            }]
        );
        assert_eq!(p.chat_format(), ChatFormat::default());
        assert_eq!(p.loss_on, LossOn::All);
        assert_eq!(p.validation_fraction, 0.01);
        assert_eq!(p.seq_len, 8192);
        assert_eq!(p.on_malformed, OnMalformed::Skip);
    }

    #[test]
    fn every_param_parses() {
        let p = DataParams::from_params(&json!({
            "datasets": [
                {"input": "oasst", "format": "oasst", "weight": 2.5},
                {"input": "schnabel", "format": "instruction", "weight": 0.5},
                {"input": "alpaca", "format": "sharegpt"}
            ],
            "system_prompt": false,
            "loss_on": "assistant",
            "validation_fraction": 0.02,
            "seq_len": 4096,
            "seed": 7,
            "on_malformed": "fail"
        }))
        .expect("params");
        assert_eq!(p.system_prompt, None);
        assert_eq!(p.datasets[0].format, Format::Oasst);
        assert_eq!(p.datasets[1].weight, 0.5);
        assert_eq!(p.loss_on, LossOn::Assistant);
        assert_eq!((p.seq_len, p.seed), (4096, 7));
        assert_eq!(p.on_malformed, OnMalformed::Fail);
        let p = DataParams::from_params(
            &json!({"datasets": [{"input": "a"}], "system_prompt": "Du bist ein Pirat."}),
        )
        .expect("params");
        assert_eq!(p.system_prompt.as_deref(), Some("Du bist ein Pirat."));
        // Serialised params read back the same (false stays false).
        let q = DataParams {
            system_prompt: None,
            ..p.clone()
        };
        let back = DataParams::from_params(&serde_json::to_value(&q).expect("json")).expect("back");
        assert_eq!(back, q);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({}), "datasets"),
            (
                json!({"datasets": [{"input": "a", "wieght": 2}]}),
                "datasets[0].wieght",
            ),
            (
                json!({"datasets": [{"input": "a", "format": "csv"}]}),
                "datasets[0].format",
            ),
            (
                json!({"datasets": [{"input": "a"}, {"input": "b", "weight": -1}]}),
                "datasets[1].weight",
            ),
            (
                json!({"datasets": [{"input": "a"}, {"input": "a"}]}),
                "datasets[1].input",
            ),
            (
                json!({"datasets": [{"input": "a"}], "system_prompt": true}),
                "system_prompt",
            ),
            (
                json!({"datasets": [{"input": "a"}], "system_prompt": 3}),
                "system_prompt",
            ),
            (
                json!({"datasets": [{"input": "a"}], "loss_on": "assistants"}),
                "loss_on",
            ),
            (
                json!({"datasets": [{"input": "a"}], "validation_fraction": 1.0}),
                "validation_fraction",
            ),
            (
                json!({"datasets": [{"input": "a"}], "seq_len": 1}),
                "seq_len",
            ),
            (
                json!({"datasets": [{"input": "a"}], "on_malformed": "count"}),
                "on_malformed",
            ),
            (json!({"datasets": [{"input": "a"}], "lr": 1e-5}), "lr"),
        ];
        for (params, field) in cases {
            let e = DataParams::from_params(&params).unwrap_err();
            assert_eq!(e.field, field, "{params}: {e}");
        }
        let e =
            DataParams::from_params(&json!({"datasets": [{"input": "a"}], "system_prompt": true}))
                .unwrap_err();
        assert_eq!(
            e.message,
            "must be a string, or false for no system message"
        );
    }
}
