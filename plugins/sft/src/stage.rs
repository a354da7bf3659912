//! The `sft` stage itself: the data side ([`crate::config::DataParams`]) feeding the shared
//! trainer (`leo-train`), and the chat checkpoint it writes.
//!
//! ```toml
//! [stages.sft]
//! plugin = "sft"
//! inputs = { model = "pretrain.model", oasst_de = "hf://datasets/OpenAssistant/oasst_de" }
//! params = { datasets = [{ input = "oasst_de" }], epochs = 3, lr = 3e-5, min_lr = 0.0,
//!            warmup_steps = 100, global_batch = 256, micro_batch = 4, seq_len = 8192 }
//! ```
//!
//! Input `model` is an HF Llama checkpoint with its `tokenizer.json`. ChatML's `<|im_start|>`
//! and `<|im_end|>` are added to the tokenizer as special tokens and the embeddings grow to
//! match (new rows start at the mean embedding). Conversations are rendered, encoded with their
//! loss labels, packed into rows with document-masked attention (each conversation attends to
//! itself only) and trained for `epochs`. Output `model`: an HF chat checkpoint — weights,
//! `tokenizer.json` with the ChatML tokens, `tokenizer_config.json` with the `chat_template`,
//! and `<|im_end|>` as the end-of-sequence token so that generation stops after an answer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use leo_llama::tch::Kind;
use leo_llama::{Llama, Tokenizer};
use leo_plugin::{Emitter, Invocation, ParamError, Plugin};
use leo_train::data::{InMemory, Sample, Samples};
use leo_train::{stage, Run, TrainParams};
use serde_json::{json, Map, Value};

use crate::chatml::{ChatFormat, IM_END};
use crate::config::DataParams;
use crate::encode::{encode, Encoded};
use crate::formats::read_dataset;
use crate::mix::{mix, MixInput};
use crate::pack::{pack, Packed};

pub struct Sft;

/// The data params' keys; `epochs` is the stage's; every other key is the trainer's.
const DATA_KEYS: &[&str] = &[
    "datasets",
    "system_prompt",
    "loss_on",
    "validation_fraction",
    "seq_len",
    "seed",
    "on_malformed",
];

/// The stage's params: data, epochs (or the trainer's `steps`), trainer.
pub struct SftParams {
    pub data: DataParams,
    pub epochs: Option<f64>,
    pub train: TrainParams,
    /// The expected architecture of the `model` input (`config.json` fields): checked against
    /// the checkpoint when it loads, and `leo plan`'s parameter count.
    pub model: Option<Value>,
    /// Tokens in one epoch of the weighted mix, for `leo plan`'s estimate only (the stage
    /// counts the real ones); LeoLM's German mix: 67.5M.
    pub expected_tokens: Option<u64>,
}

pub fn parse(params: &Value) -> Result<SftParams, ParamError> {
    let empty = Map::new();
    let map = match params {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => return Err(ParamError::new("", "params must be a table")),
    };
    let (mut data, mut rest) = (Map::new(), Map::new());
    let (mut epochs, mut model, mut expected_tokens) = (None, None, None);
    for (k, v) in map {
        if k == "model" {
            if !v.is_object() {
                return Err(ParamError::new(
                    "model",
                    "must be a table of config.json fields (the expected architecture of the input `model`)",
                ));
            }
            leo_llama::Config::from_json(&v.to_string())
                .map_err(|e| ParamError::new("model", format!("not a Llama config.json: {e:#}")))?;
            model = Some(v.clone());
        } else if k == "expected_tokens" {
            match v.as_u64() {
                Some(n) if n > 0 => expected_tokens = Some(n),
                _ => {
                    return Err(ParamError::new(
                        "expected_tokens",
                        "must be a positive integer (tokens in one epoch of the mix)",
                    ))
                }
            }
        } else if k == "epochs" {
            match v.as_f64() {
                Some(e) if e > 0.0 && e.is_finite() => epochs = Some(e),
                _ => return Err(ParamError::new("epochs", "must be a positive number")),
            }
        } else if DATA_KEYS.contains(&k.as_str()) {
            data.insert(k.clone(), v.clone());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    // The data seed also seeds the trainer's order unless that is given on its own.
    if let Some(seed) = data.get("seed") {
        rest.insert("seed".into(), seed.clone());
    }
    if epochs.is_some() && rest.contains_key("steps") {
        return Err(ParamError::new(
            "steps",
            "give either epochs or steps, not both",
        ));
    }
    let data = DataParams::from_params(&Value::Object(data))?;
    let own: Vec<&str> = DATA_KEYS
        .iter()
        .copied()
        .chain(["epochs", "model", "expected_tokens"])
        .collect();
    let train = stage::train_params(Value::Object(rest), &own)?;
    if epochs.is_none() && !map.contains_key("steps") {
        return Err(ParamError::new(
            "epochs",
            "say how long to train: epochs (LeoLM: 3) or steps",
        ));
    }
    Ok(SftParams {
        data,
        epochs,
        train,
        model,
        expected_tokens,
    })
}

impl Plugin for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn version(&self) -> String {
        format!("sft-{}", env!("CARGO_PKG_VERSION"))
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        parse(params)?;
        Ok(vec!["model".into()])
    }

    fn estimate(&self, params: &Value) -> Option<leo_plugin::Estimate> {
        parse(params).ok().map(|p| crate::estimate::estimate_of(&p))
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let SftParams {
            data,
            epochs,
            mut train,
            model: expected,
            ..
        } = parse(&inv.params).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (rank, world) = (inv.rank as usize, inv.world_size as usize);
        let device = stage::device(train.device, world, rank)?;
        let resume = stage::resume_point(inv)?;
        let base = stage::input(inv, "model")?;

        // The model and its tokenizer with ChatML; a checkpoint has both already.
        let from = resume
            .as_ref()
            .map_or(base.to_path_buf(), |(dir, _)| dir.join("model"));
        // The expected architecture is the input's, before ChatML grows the vocabulary; a
        // checkpoint of this stage has grown already.
        if let (Some(expected), None) = (&expected, &resume) {
            leo_train::expected::check_expected_config(&inv.stage, expected, base)?;
        }
        let mut tokenizer = Tokenizer::from_file(&from.join("tokenizer.json"))
            .with_context(|| format!("the tokenizer of {}", from.display()))?;
        let added = tokenizer.add_chatml_tokens()?;
        let mut model = Llama::load(&from, device, Kind::Float)
            .with_context(|| format!("loading {}", from.display()))?;
        let vocab = tokenizer.vocab_size() as i64;
        if vocab > model.config.vocab_size {
            model.resize_token_embeddings(vocab)?;
        }
        let im_end = tokenizer
            .token_to_id(IM_END)
            .context("the tokenizer has no <|im_end|> after adding it")?;
        model.config.eos_token_id = Some(i64::from(im_end));
        if rank == 0 && added > 0 {
            eprintln!(
                "added {added} ChatML token(s); vocabulary {} -> {vocab}",
                model.config.vocab_size.min(vocab)
            );
        }

        let format = data.chat_format();
        let (train_rows, val_rows) = rows(inv, &data, &format, &tokenizer, rank)?;
        let global = train.micro_batch * train.accumulation(world)? * world;
        if let Some(e) = epochs {
            train.steps = ((train_rows.len() as f64 * e) / global as f64)
                .ceil()
                .max(1.0) as u64;
            if train.warmup_steps > train.steps {
                bail!(
                    "warmup_steps {} is more than the {} steps of {e} epochs",
                    train.warmup_steps,
                    train.steps
                );
            }
        }
        if rank == 0 {
            eprintln!(
                "{} training rows ({} validation) of {} tokens: {} steps of {global} rows",
                train_rows.len(),
                val_rows.len(),
                data.seq_len,
                train.steps
            );
        }
        let template = format.template();
        let model_files =
            |dir: &Path| write_chat_tokenizer(dir, &tokenizer, &template, data.seq_len);
        let mut comm = stage::collective(inv)?;
        let outcome = leo_train::train(
            model,
            comm.as_mut(),
            Run {
                params: &train,
                record: inv.params.clone(),
                train: &train_rows,
                validation: (!val_rows.is_empty()).then_some(&val_rows as &dyn Samples),
                checkpoint_dir: inv.checkpoint_dir.clone(),
                resume,
                events,
                model_files: &model_files,
            },
        )?;
        let kind = outcome.model.kind();
        stage::write_output_model(inv, events, &outcome.model, kind, &model_files)
    }
}

/// Reads, mixes, encodes and packs the datasets into training and validation rows.
fn rows(
    inv: &Invocation,
    data: &DataParams,
    format: &ChatFormat,
    tokenizer: &Tokenizer,
    rank: usize,
) -> Result<(InMemory, InMemory)> {
    let mut sets = Vec::new();
    for d in &data.datasets {
        let path = stage::input(inv, &d.input)?;
        let set = read_dataset(path, d.format, data.on_malformed)
            .with_context(|| format!("dataset `{}` ({})", d.input, path.display()))?;
        if rank == 0 {
            eprintln!(
                "dataset {}: {} conversations ({} layout, {} file(s)), {} malformed",
                d.input,
                set.conversations.len(),
                set.format.name(),
                set.files,
                set.malformed
            );
            for m in &set.malformed_examples {
                eprintln!("  malformed: {m}");
            }
        }
        sets.push(set);
    }
    let inputs: Vec<MixInput<'_>> = data
        .datasets
        .iter()
        .zip(&sets)
        .map(|(d, s)| MixInput {
            name: &d.input,
            weight: d.weight,
            conversations: &s.conversations,
        })
        .collect();
    let m = mix(&inputs, data.validation_fraction, data.seed)?;
    let encode_all = |picks: &[crate::mix::Pick]| -> Result<Vec<Encoded>> {
        picks
            .iter()
            .map(|p| {
                let c = &sets[p.dataset].conversations[p.conversation];
                encode(c, tokenizer, format, data.loss_on)
                    .with_context(|| format!("encoding conversation {}", c.id))
            })
            .collect()
    };
    let pad = tokenizer
        .token_to_id("<unk>")
        .or_else(|| tokenizer.token_to_id("</s>"))
        .unwrap_or(0);
    // A conversation longer than a row would lose its end — usually the answer — to
    // truncation: it is left out instead (as axolotl and TRL do), and counted.
    let fitting = |mut e: Vec<Encoded>| {
        let before = e.len();
        e.retain(|c| c.ids.len() <= data.seq_len);
        (before - e.len(), e)
    };
    let (long_train, train) = fitting(encode_all(&m.train)?);
    let (long_val, validation) = fitting(encode_all(&m.validation)?);
    if rank == 0 && long_train + long_val > 0 {
        eprintln!(
            "left out {long_train} training and {long_val} validation conversation(s) longer than seq_len {}",
            data.seq_len
        );
    }
    let train = pack(&train, data.seq_len, pad)?;
    let validation = pack(&validation, data.seq_len, pad)?;
    if train.rows.is_empty() {
        bail!("no training rows: every conversation was held out or malformed");
    }
    Ok((
        in_memory(train, data.seq_len),
        in_memory(validation, data.seq_len),
    ))
}

fn in_memory(p: Packed, seq_len: usize) -> InMemory {
    InMemory {
        rows: p
            .rows
            .into_iter()
            .map(|r| Sample {
                ids: r.ids.iter().map(|&t| i64::from(t)).collect(),
                labels: r.labels,
                doc_ids: Some(r.doc_ids.iter().map(|&d| i64::from(d)).collect()),
            })
            .collect(),
        seq_len,
    }
}

/// `tokenizer.json` with the ChatML tokens and a `tokenizer_config.json` carrying the chat
/// template. The class is `PreTrainedTokenizerFast`: transformers 5 rebuilds a declared
/// `LlamaTokenizerFast` from its own rules, whose ids differ from the trained ones around the
/// ChatML tokens (docs/sft.md).
pub fn write_chat_tokenizer(
    dir: &Path,
    tokenizer: &Tokenizer,
    template: &str,
    max_length: usize,
) -> Result<()> {
    tokenizer.save(&dir.join("tokenizer.json"))?;
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": IM_END,
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": true,
        "add_eos_token": false,
        "model_max_length": max_length,
        "chat_template": template,
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_or_steps_and_the_data_seed_orders_the_rows() {
        let p = parse(&json!({
            "datasets": [{"input": "oasst_de"}], "epochs": 3, "lr": 3e-5, "seed": 4,
            "global_batch": 256, "micro_batch": 4,
        }))
        .unwrap();
        assert_eq!(p.epochs, Some(3.0));
        assert_eq!((p.train.lr, p.train.seed, p.data.seed), (3e-5, 4, 4));
        let field = |v: Value| parse(&v).err().map(|e| e.field);
        let data = json!([{"input": "x"}]);
        assert_eq!(
            field(json!({"datasets": data, "epochs": 1, "steps": 5})),
            Some("steps".into())
        );
        assert_eq!(field(json!({"datasets": data})), Some("epochs".into()));
        assert_eq!(
            field(json!({"datasets": data, "epochs": 0})),
            Some("epochs".into())
        );
        assert_eq!(
            field(json!({"datasets": data, "steps": 5, "lr": "x"})),
            Some("lr".into())
        );
        assert_eq!(field(json!({"epochs": 1})), Some("datasets".into()));
        assert!(Sft.describe(&json!({"datasets": data, "steps": 5})).is_ok());
    }
}
