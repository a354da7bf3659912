//! The `pretrain` stage: LeoLM's stage-2 continued pretraining (Llama-2 on German text at 8k
//! context with linear RoPE scaling ×2), and pretraining from scratch for the tiny workflow.
//!
//! ```toml
//! [stages.pretrain]
//! plugin = "pretrain"
//! inputs = { tokens = "tokenize.tokens", model = "hf://meta-llama/Llama-2-13b-hf" }
//! resources = { gpus = 8 }
//! params = { seq_len = 8192, rope_scaling = { type = "linear", factor = 2.0 },
//!            max_position_embeddings = 8192, steps = 15360, warmup_steps = 153,
//!            lr = 2e-5, min_lr = 2e-6, micro_batch = 2, global_batch = 512 }
//! ```
//!
//! Inputs: `tokens` (the tokenize stage's output: `train/` and `validation/` shards), `model`
//! (an HF Llama checkpoint to continue; without it `params.model` is the `config.json` of a new,
//! randomly initialised model) and optionally `tokenizer` (a `tokenizer.json` or a folder; the
//! files go beside the weights). Output `model`: an HF checkpoint `transformers` loads.
//!
//! With a `model` input, `params.model` is the expected architecture: every field it gives is
//! checked against the checkpoint's `config.json` before the weights load, and `leo plan` takes
//! the parameter count for its estimate from it ([`Pretrain::estimate`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use leo_llama::tch::{Device, Kind};
use leo_llama::{Config, Llama, RopeScaling};
use leo_plugin::{Emitter, Estimate, Invocation, ParamError, Plugin, StorageItem};
use leo_train::data::{PackedTokens, Samples};
use leo_train::{estimate, stage, Run, TrainParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Pretrain;

/// The stage's own params; every other key is a [`TrainParams`] field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainParams {
    /// Tokens per training row.
    pub seq_len: usize,
    /// Attention stays within each packed document (positions restart per document).
    #[serde(default)]
    pub doc_mask: bool,
    /// `config.json` fields of a new model (no `model` input): vocab_size, hidden_size, …;
    /// with a `model` input, the fields that checkpoint's `config.json` must have.
    #[serde(default)]
    pub model: Option<Value>,
    /// New RoPE scaling for a continued model: `{ type = "linear", factor = 2.0 }`.
    #[serde(default)]
    pub rope_scaling: Option<RopeParam>,
    /// New context length (LeoLM: 8192).
    #[serde(default)]
    pub max_position_embeddings: Option<i64>,
    /// dtype of the output weights: float32 (default), bfloat16 or float16.
    #[serde(default)]
    pub save_dtype: SaveDtype,
}

const OWN: &[&str] = &[
    "seq_len",
    "doc_mask",
    "model",
    "rope_scaling",
    "max_position_embeddings",
    "save_dtype",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeParam {
    #[serde(rename = "type")]
    pub kind: String,
    pub factor: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    #[default]
    Float32,
    Bfloat16,
    Float16,
}

impl SaveDtype {
    pub fn bytes(self) -> u64 {
        match self {
            SaveDtype::Float32 => 4,
            SaveDtype::Bfloat16 | SaveDtype::Float16 => 2,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            SaveDtype::Float32 => Kind::Float,
            SaveDtype::Bfloat16 => Kind::BFloat16,
            SaveDtype::Float16 => Kind::Half,
        }
    }
}

/// Parses and checks the params: the stage's and the trainer's.
pub fn parse(params: &Value) -> Result<(PretrainParams, TrainParams), ParamError> {
    let (p, t): (PretrainParams, TrainParams) = stage::split_params(params, OWN)?;
    if p.seq_len < 2 {
        return Err(ParamError::new("seq_len", "must be at least 2"));
    }
    if let Some(r) = &p.rope_scaling {
        if r.kind != "linear" {
            return Err(ParamError::new(
                "rope_scaling.type",
                format!(
                    "only \"linear\" (position interpolation) is supported, got {:?}",
                    r.kind
                ),
            ));
        }
        if r.factor.is_nan() || r.factor < 1.0 {
            return Err(ParamError::new("rope_scaling.factor", "must be at least 1"));
        }
    }
    if let Some(m) = &p.model {
        Config::from_json(&m.to_string())
            .map_err(|e| ParamError::new("model", format!("not a Llama config.json: {e:#}")))?;
    }
    if p.max_position_embeddings
        .is_some_and(|m| m < p.seq_len as i64)
    {
        return Err(ParamError::new(
            "max_position_embeddings",
            format!("is shorter than seq_len ({})", p.seq_len),
        ));
    }
    Ok((p, t))
}

impl Plugin for Pretrain {
    fn name(&self) -> &'static str {
        "pretrain"
    }

    fn version(&self) -> String {
        format!("pretrain-{}", env!("CARGO_PKG_VERSION"))
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        parse(params)?;
        Ok(vec!["model".into()])
    }

    /// Tokens = steps × global_batch × seq_len; N from `params.model` (a new model's config, or
    /// the expected architecture of the `model` input); see [`leo_train::estimate`].
    fn estimate(&self, params: &Value) -> Option<Estimate> {
        let (p, t) = parse(params).ok()?;
        Some(estimate_of(&p, &t))
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let (p, t) = parse(&inv.params).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (rank, world) = (inv.rank as usize, inv.world_size as usize);
        let device = stage::device(t.device, world, rank)?;
        let resume = stage::resume_point(inv)?;
        let mut model = match &resume {
            Some((dir, _)) => {
                Llama::load(&dir.join("model"), device, Kind::Float).with_context(|| {
                    format!("loading the checkpoint's model from {}", dir.display())
                })?
            }
            None => initial_model(inv, &p, &t, device)?,
        };
        // A checkpoint already carries the new context; a fresh start applies it.
        if resume.is_none() && (p.rope_scaling.is_some() || p.max_position_embeddings.is_some()) {
            let scaling = p
                .rope_scaling
                .as_ref()
                .map(|r| RopeScaling { factor: r.factor })
                .or(model.config.rope_scaling);
            let max = p
                .max_position_embeddings
                .unwrap_or(model.config.max_position_embeddings);
            model.set_rope_scaling(scaling, max);
        }
        let tokens = stage::input(inv, "tokens")?;
        check_vocab(tokens, &model)?;
        let train_rows = PackedTokens::open_dir(&tokens.join("train"), p.seq_len, p.doc_mask)?;
        let val_dir = tokens.join("validation");
        let val_rows = match PackedTokens::open_dir(&val_dir, p.seq_len, p.doc_mask) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => None,
        };
        if train_rows.is_empty() {
            bail!(
                "{} holds {} tokens, less than one row of seq_len {}",
                tokens.join("train").display(),
                train_rows.tokens(),
                p.seq_len
            );
        }
        let tokenizer_from = inv
            .inputs
            .get("tokenizer")
            .or_else(|| inv.inputs.get("model"))
            .map(|a| a.path.clone());
        let model_files = |dir: &Path| -> Result<()> {
            if let Some(from) = &tokenizer_from {
                stage::copy_tokenizer(from, dir)?;
            }
            Ok(())
        };
        let mut comm = stage::collective(inv)?;
        let outcome = leo_train::train(
            model,
            comm.as_mut(),
            Run {
                params: &t,
                record: inv.params.clone(),
                train: &train_rows,
                validation: val_rows.as_ref().map(|v| v as &dyn Samples),
                checkpoint_dir: inv.checkpoint_dir.clone(),
                resume,
                events,
                model_files: &model_files,
            },
        )?;
        stage::write_output_model(
            inv,
            events,
            &outcome.model,
            p.save_dtype.kind(),
            &model_files,
        )
    }
}

/// The stage's cost from its params (no input is read): see [`leo_train::estimate`].
pub fn estimate_of(p: &PretrainParams, t: &TrainParams) -> Estimate {
    let config = p
        .model
        .as_ref()
        .and_then(|m| Config::from_json(&m.to_string()).ok());
    let seq_len = p.seq_len as u64;
    let tokens = estimate::step_tokens(t, seq_len);
    let mut e = estimate::training(config.as_ref(), t, seq_len, tokens, p.save_dtype.bytes());
    match (tokens, &config) {
        (None, _) => e
            .notes
            .push("tokens depend on the world size: give global_batch to estimate them".into()),
        (Some(d), Some(c)) => {
            // Megatron shards hold uint16 ids below 65,536 ids, else int32.
            let width = if c.vocab_size <= 1 << 16 { 2 } else { 4 };
            e.storage.push(StorageItem {
                what: format!(
                    "token shards read (the tokenize output, {width} B/token; less if tokens repeat)"
                ),
                bytes: d * width,
                count: 1,
            });
        }
        (Some(_), None) => {}
    }
    if p.doc_mask {
        e.notes
            .push("doc_mask: attention FLOPs are an upper bound".into());
    }
    e
}

/// The model before any training: the `model` input, or a new one from `params.model`.
fn initial_model(
    inv: &Invocation,
    p: &PretrainParams,
    t: &TrainParams,
    device: Device,
) -> Result<Llama> {
    match (inv.inputs.get("model"), &p.model) {
        (Some(m), expected) => {
            // params.model beside an input is the shape the workflow expects: checked before
            // gigabytes of weights load.
            if let Some(expected) = expected {
                leo_train::expected::check_expected_config(&inv.stage, expected, &m.path)?;
            }
            Llama::load(&m.path, device, Kind::Float)
                .with_context(|| format!("loading the input model {}", m.path.display()))
        }
        (None, Some(cfg)) => {
            let config = Config::from_json(&cfg.to_string()).context("params.model")?;
            Llama::init(config, device, Kind::Float, t.seed as i64)
        }
        (None, None) => bail!(
            "stage {}: no model to train: add an input `model` (an HF checkpoint) or params.model (a config.json table)",
            inv.stage
        ),
    }
}

/// Token ids must fit the model's vocabulary: compares the tokenize stage's meta.json.
fn check_vocab(tokens: &Path, model: &Llama) -> Result<()> {
    let path = tokens.join("meta.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let meta: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(v) = meta
        .pointer("/tokenizer/vocab_size")
        .and_then(Value::as_i64)
    {
        if v > model.config.vocab_size {
            bail!(
                "the tokens come from a tokenizer of {v} ids ({}), the model's vocabulary has {}",
                path.display(),
                model.config.vocab_size
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(params: Value) -> String {
        let e = Pretrain.describe(&params).unwrap_err();
        assert!(!e.message.is_empty());
        e.field
    }

    #[test]
    fn params_split_between_the_stage_and_the_trainer() {
        let (p, t) = parse(&json!({
            "seq_len": 8192, "rope_scaling": {"type": "linear", "factor": 2.0},
            "max_position_embeddings": 8192, "steps": 15360, "warmup_steps": 153,
            "lr": 2e-5, "min_lr": 2e-6, "micro_batch": 2, "global_batch": 512,
        }))
        .unwrap();
        assert_eq!(p.seq_len, 8192);
        assert_eq!(p.rope_scaling.unwrap().factor, 2.0);
        assert_eq!(
            (t.steps, t.warmup_steps, t.global_batch),
            (15360, 153, Some(512))
        );
        assert_eq!(t.accumulation(8).unwrap(), 32);
        assert_eq!(
            Pretrain.describe(&json!({"seq_len": 16})).unwrap(),
            vec!["model"]
        );
    }

    #[test]
    fn the_estimate_of_leolm_13b_stage2_comes_from_the_expected_architecture() {
        let params = json!({
            "seq_len": 8192, "steps": 15360, "global_batch": 512, "micro_batch": 2,
            "checkpoint_every": 500, "save_dtype": "bfloat16",
            "model": {"vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824,
                      "num_hidden_layers": 40, "num_attention_heads": 40},
        });
        let e = Pretrain.estimate(&params).unwrap();
        assert_eq!(e.tokens, Some(64_424_509_440));
        assert_eq!(e.parameters, Some(13_015_864_320));
        let dense = e.flops_dense.unwrap();
        assert!((dense / 5.0e21 - 1.0).abs() < 0.01, "{dense:e}");
        // 30 checkpoints of 12 B/param, the bf16 model, 2 B per token of shards.
        let n = 13_015_864_320u64;
        assert_eq!(e.storage_bytes(), 30 * 12 * n + 2 * n + 2 * 64_424_509_440);

        // Without the shape: tokens but no parameters, and a note saying what to add.
        let e = Pretrain
            .estimate(&json!({"seq_len": 8192, "steps": 10, "global_batch": 4}))
            .unwrap();
        assert_eq!((e.tokens, e.parameters), (Some(10 * 4 * 8192), None));
        assert!(
            e.notes.iter().any(|n| n.contains("params.model")),
            "{:?}",
            e.notes
        );
        // Without a global batch the world size decides the tokens.
        let e = Pretrain.estimate(&json!({"seq_len": 8192})).unwrap();
        assert_eq!(e.tokens, None);
    }

    /// The expected architecture is checked against the input checkpoint before its weights
    /// load: a 13B-shaped workflow pointed at a 7B checkpoint fails at once, naming the field.
    #[test]
    fn a_checkpoint_of_another_shape_fails_naming_the_field_before_weights_load() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("llama-2-7b");
        std::fs::create_dir_all(&ckpt).unwrap();
        // Only the config: were the weights read first, the error would be about them.
        std::fs::write(
            ckpt.join("config.json"),
            r#"{"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                "num_hidden_layers": 32, "num_attention_heads": 32, "rms_norm_eps": 1e-05}"#,
        )
        .unwrap();
        let params = |hidden: i64| {
            json!({"seq_len": 16, "device": "cpu",
                   "model": {"vocab_size": 32000, "hidden_size": hidden, "num_hidden_layers": 32,
                             "intermediate_size": 11008, "num_attention_heads": 32}})
        };
        // From JSON, as the engine hands it over (fields added later keep their defaults).
        let inv = |params: Value| -> Invocation {
            serde_json::from_value(json!({
                "protocol": leo_plugin::PROTOCOL_VERSION, "run_id": "test", "stage": "pretrain",
                "attempt": 1, "plugin": "pretrain", "params": params,
                "inputs": {"model": {"digest": "sha256:test", "path": ckpt}},
                "outputs": ["model"], "output_dir": tmp.path().join("out"),
                "checkpoint_dir": tmp.path().join("ckpt"), "resume_from": null,
                "work_dir": tmp.path(), "rank": 0, "world_size": 1, "rendezvous": null,
            }))
            .unwrap()
        };
        let e = format!(
            "{:#}",
            Pretrain
                .run(&inv(params(5120)), &Emitter::new())
                .unwrap_err()
        );
        assert!(
            e.contains("stage pretrain: params.model.hidden_size: the workflow expects 5120"),
            "{e}"
        );
        assert!(e.contains("has 4096"), "{e}");
        // The right shape passes the check and goes on to load the (missing) weights.
        let e = format!(
            "{:#}",
            Pretrain
                .run(&inv(params(4096)), &Emitter::new())
                .unwrap_err()
        );
        assert!(!e.contains("params.model"), "{e}");
        assert!(e.contains("loading the input model"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(json!({})), "");
        assert_eq!(field(json!({"seq_len": 1})), "seq_len");
        assert_eq!(field(json!({"seq_len": 8, "lr": -1.0})), "lr");
        assert_eq!(
            field(json!({"seq_len": 8, "micro_batch": 3, "global_batch": 8})),
            "global_batch"
        );
        assert_eq!(
            field(json!({"seq_len": 8, "rope_scaling": {"type": "dynamic", "factor": 2.0}})),
            "rope_scaling.type"
        );
        assert_eq!(
            field(json!({"seq_len": 8, "model": {"hidden_size": 4}})),
            "model"
        );
        assert_eq!(
            field(json!({"seq_len": 8, "max_position_embeddings": 4})),
            "max_position_embeddings"
        );
        let e = Pretrain
            .describe(&json!({"seq_len": 8, "learning_rate": 1e-3}))
            .unwrap_err();
        assert!(
            e.message.contains("unknown field `learning_rate`"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("seq_len"),
            "the stage's own params are listed: {}",
            e.message
        );
    }
}
