//! `config.json` of a Llama checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// The model's shape, as in HF `LlamaConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Grouped-query attention: fewer key/value heads than query heads (Llama-2-70b: 8).
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    /// Standard deviation of the initial weights of a new model.
    pub initializer_range: f64,
}

/// Position interpolation (Chen et al. 2023, "Extending Context Window of Large Language Models
/// via Positional Interpolation"): positions are divided by `factor`. LeoLM uses factor 2 at
/// 8192 tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeScaling {
    pub factor: f64,
}

#[derive(Deserialize)]
struct Raw {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: i64,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<i64>,
    eos_token_id: Option<Value>,
    #[serde(default = "default_initializer_range")]
    initializer_range: f64,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_initializer_range() -> f64 {
    0.02
}

fn default_max_pos() -> i64 {
    2048
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Config> {
        let raw: Raw = serde_json::from_str(text).context("parsing a Llama config.json")?;
        // transformers 5: rope_parameters {rope_type, factor, rope_theta}; earlier: rope_scaling
        // {type, factor} and a top-level rope_theta.
        let rope = raw
            .rope_parameters
            .as_ref()
            .or(raw.rope_scaling.as_ref())
            .filter(|v| !v.is_null());
        let mut rope_theta = raw.rope_theta;
        let mut rope_scaling = None;
        if let Some(r) = rope {
            if let Some(t) = r.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(t);
            }
            let kind = r
                .get("rope_type")
                .or_else(|| r.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            match kind {
                "default" => {}
                "linear" => {
                    let factor = r
                        .get("factor")
                        .and_then(Value::as_f64)
                        .context("rope scaling `linear` needs a `factor`")?;
                    if factor <= 0.0 {
                        bail!("rope scaling factor must be positive, got {factor}");
                    }
                    rope_scaling = Some(RopeScaling { factor });
                }
                other => bail!("rope scaling `{other}` is not supported (default and linear are)"),
            }
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 {
            bail!("num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})");
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        let eos_token_id = match raw.eos_token_id {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_i64),
            _ => None,
        };
        Ok(Config {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_id,
            initializer_range: raw.initializer_range,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: &str = r#""vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 40, "num_attention_heads": 40, "max_position_embeddings": 8192"#;

    #[test]
    fn reads_the_llama2_form() {
        let c = Config::from_json(&format!(
            r#"{{{SHAPE}, "rope_scaling": {{"type": "linear", "factor": 2.0}}, "rope_theta": 10000.0,
                "rms_norm_eps": 1e-5, "torch_dtype": "float16", "eos_token_id": 2}}"#
        ))
        .unwrap();
        assert_eq!(c.rope_scaling, Some(RopeScaling { factor: 2.0 }));
        assert_eq!(
            (c.head_dim, c.num_key_value_heads, c.eos_token_id),
            (128, 40, Some(2))
        );
    }

    #[test]
    fn reads_the_transformers5_form() {
        let c = Config::from_json(&format!(
            r#"{{{SHAPE}, "num_key_value_heads": 8, "head_dim": 128, "dtype": "bfloat16",
                "rope_parameters": {{"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}}}}"#
        ))
        .unwrap();
        assert_eq!(c.rope_scaling, Some(RopeScaling { factor: 2.0 }));
        assert_eq!((c.rope_theta, c.num_key_value_heads), (500000.0, 8));
    }

    #[test]
    fn rejects_what_it_cannot_compute() {
        let e = Config::from_json(&format!(
            r#"{{{SHAPE}, "rope_scaling": {{"type": "yarn", "factor": 4.0}}}}"#
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("`yarn` is not supported"));
        let e =
            Config::from_json(&format!(r#"{{{SHAPE}, "num_key_value_heads": 7}}"#)).unwrap_err();
        assert!(format!("{e:#}").contains("multiple"));
    }
}
