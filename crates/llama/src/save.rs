//! Writing HF checkpoints: `config.json`, `generation_config.json`, and the weights as
//! `model.safetensors` or `model-0000i-of-0000n.safetensors` shards with
//! `model.safetensors.index.json`, so `AutoModelForCausalLM.from_pretrained` loads them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Kind, Tensor};

use crate::config::Config;
use crate::model::Llama;

impl Llama {
    /// Writes the model to `dir` (created), in shards of at most `max_shard_bytes` (a single
    /// tensor larger than that gets a shard of its own). One shard → `model.safetensors`.
    pub fn save(&self, dir: &Path, max_shard_bytes: u64) -> Result<()> {
        self.save_as(dir, max_shard_bytes, self.kind())
    }

    /// [`Llama::save`] with the weights converted to `kind` (a model trained in f32 published
    /// in bf16, as LeoLM's are).
    pub fn save_as(&self, dir: &Path, max_shard_bytes: u64, kind: Kind) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut named: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_kind(kind)))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        // Group in name order, like transformers.
        let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
        let mut current = 0u64;
        for (name, t) in named {
            let bytes = t.numel() as u64 * element_size(t.kind())?;
            if current > 0 && current + bytes > max_shard_bytes {
                shards.push(Vec::new());
                current = 0;
            }
            current += bytes;
            if let Some(last) = shards.last_mut() {
                last.push((name, t));
            }
        }
        let n = shards.len();
        let mut weight_map = BTreeMap::new();
        let mut total_size = 0u64;
        for (i, shard) in shards.iter().enumerate() {
            let file = if n == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
            };
            let mut buffers = Vec::with_capacity(shard.len());
            for (name, t) in shard {
                let t = t.to_device(tch::Device::Cpu).contiguous();
                let numel = t.numel();
                let mut data = vec![0u8; numel * element_size(t.kind())? as usize];
                t.copy_data_u8(&mut data, numel);
                total_size += data.len() as u64;
                weight_map.insert(name.clone(), file.clone());
                buffers.push((
                    name.clone(),
                    dtype(t.kind())?,
                    t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(),
                    data,
                ));
            }
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = buffers
                .iter()
                .map(|(name, dt, shape, data)| {
                    safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                        .map(|v| (name.clone(), v))
                        .map_err(|e| anyhow::anyhow!("tensor {name}: {e}"))
                })
                .collect::<Result<_>>()?;
            let metadata = Some(std::collections::HashMap::from([(
                "format".to_string(),
                "pt".to_string(),
            )]));
            let path = dir.join(&file);
            safetensors::serialize_to_file(views, &metadata, &path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if n > 1 {
            let index =
                json!({ "metadata": { "total_size": total_size }, "weight_map": weight_map });
            write_json(&dir.join("model.safetensors.index.json"), &index)?;
        }
        write_json(&dir.join("config.json"), &config_json(&self.config, kind))?;
        let mut generation = json!({ "_from_model_config": true });
        if let Some(b) = self.config.bos_token_id {
            generation["bos_token_id"] = json!(b);
        }
        if let Some(e) = self.config.eos_token_id {
            generation["eos_token_id"] = json!(e);
        }
        write_json(&dir.join("generation_config.json"), &generation)?;
        Ok(())
    }
}

/// The Llama-2 layout of `config.json` (what LeoLM publishes; transformers 5 reads it too).
fn config_json(c: &Config, kind: Kind) -> serde_json::Value {
    let mut v = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": match kind { Kind::BFloat16 => "bfloat16", Kind::Half => "float16", _ => "float32" },
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "initializer_range": c.initializer_range,
    });
    if let Some(s) = c.rope_scaling {
        v["rope_scaling"] = json!({ "type": "linear", "factor": s.factor });
    }
    v
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn element_size(kind: Kind) -> Result<u64> {
    Ok(match kind {
        Kind::Float => 4,
        Kind::Half | Kind::BFloat16 => 2,
        other => bail!("cannot save tensors of kind {other:?}"),
    })
}

fn dtype(kind: Kind) -> Result<safetensors::Dtype> {
    Ok(match kind {
        Kind::Float => safetensors::Dtype::F32,
        Kind::Half => safetensors::Dtype::F16,
        Kind::BFloat16 => safetensors::Dtype::BF16,
        other => bail!("cannot save tensors of kind {other:?}"),
    })
}
