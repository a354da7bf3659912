//! The expected architecture of a checkpoint a stage continues: `params.model` beside a `model`
//! input. The workflow states the shape it means to train (which `leo plan` needs for its
//! estimate, since an `hf://` checkpoint is not there at plan time), and the stage checks it
//! against the checkpoint's `config.json` before loading any weights: a workflow pointing at the
//! wrong checkpoint (7b for 13b, a chat model, another vocabulary) fails naming the field.

use std::path::Path;

use anyhow::{bail, Context, Result};
use leo_llama::Config;
use serde_json::Value;

/// Checks every field of `expected` against `dir/config.json`: equal JSON values, numbers
/// compared as numbers (`1e-05` = `0.00001`, `40` = `40.0`). A field the file lacks is compared
/// with the value transformers would use for it (`num_key_value_heads` = heads, …); one it
/// lacks with no known default is an error.
pub fn check_expected_config(stage: &str, expected: &Value, dir: &Path) -> Result<()> {
    let Some(fields) = expected.as_object() else {
        bail!("stage {stage}: params.model must be a table of config.json fields");
    };
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("stage {stage}: reading {}", path.display()))?;
    let actual: Value = serde_json::from_str(&text)
        .with_context(|| format!("stage {stage}: parsing {}", path.display()))?;
    let parsed = Config::from_json(&text)
        .with_context(|| format!("stage {stage}: {} is not a Llama config", path.display()))?;
    for (field, want) in fields {
        let got = actual
            .get(field)
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| default_of(&parsed, field));
        match got {
            Some(got) if same(want, &got) => {}
            Some(got) => bail!(
                "stage {stage}: params.model.{field}: the workflow expects {want}, the input model's {} has {got}; the `model` input is not the checkpoint the workflow describes",
                path.display()
            ),
            None => bail!(
                "stage {stage}: params.model.{field}: the workflow expects {want}, the input model's {} has no `{field}`",
                path.display()
            ),
        }
    }
    Ok(())
}

/// What transformers' `LlamaConfig` assumes for a field a `config.json` leaves out.
fn default_of(c: &Config, field: &str) -> Option<Value> {
    Some(match field {
        "num_key_value_heads" => c.num_key_value_heads.into(),
        "head_dim" => c.head_dim.into(),
        "rope_theta" => c.rope_theta.into(),
        "rms_norm_eps" => c.rms_norm_eps.into(),
        "max_position_embeddings" => c.max_position_embeddings.into(),
        "tie_word_embeddings" => c.tie_word_embeddings.into(),
        "rope_scaling" if c.rope_scaling.is_none() => Value::Null,
        _ => return None,
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// meta-llama/Llama-2-13b-hf's config.json (the fields that matter), which has no
    /// `num_key_value_heads` in its first revision.
    fn checkpoint(dir: &Path) {
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 5120,
                "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
                "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_scaling": null,
                "tie_word_embeddings": false, "torch_dtype": "float16"}"#,
        )
        .unwrap();
    }

    fn llama2_13b() -> Value {
        json!({"vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824,
               "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
               "rms_norm_eps": 0.00001, "max_position_embeddings": 4096})
    }

    #[test]
    fn the_expected_architecture_passes_when_every_field_matches() {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(dir.path());
        // num_key_value_heads is absent from the file: transformers' default (= heads) counts.
        check_expected_config("pretrain", &llama2_13b(), dir.path()).unwrap();
        check_expected_config("pretrain", &json!({"rope_scaling": null}), dir.path()).unwrap();
    }

    #[test]
    fn a_mismatching_field_fails_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(dir.path());
        // The 7b's shape against the 13b checkpoint.
        let mut want = llama2_13b();
        want["hidden_size"] = json!(4096);
        let e = format!(
            "{:#}",
            check_expected_config("pretrain", &want, dir.path()).unwrap_err()
        );
        assert!(e.contains("params.model.hidden_size"), "{e}");
        assert!(e.contains("expects 4096") && e.contains("has 5120"), "{e}");

        let want = json!({"num_key_value_heads": 8});
        let e = format!(
            "{:#}",
            check_expected_config("pretrain", &want, dir.path()).unwrap_err()
        );
        assert!(e.contains("params.model.num_key_value_heads"), "{e}");

        let want = json!({"sliding_window": 4096});
        let e = format!(
            "{:#}",
            check_expected_config("sft", &want, dir.path()).unwrap_err()
        );
        assert!(e.contains("stage sft: params.model.sliding_window"), "{e}");
        assert!(e.contains("has no `sliding_window`"), "{e}");
    }

    #[test]
    fn a_missing_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            check_expected_config("pretrain", &llama2_13b(), dir.path()).unwrap_err()
        );
        assert!(e.contains("config.json"), "{e}");
    }
}
