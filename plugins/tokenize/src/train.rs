//! The `train-tokenizer` stage plugin: a byte-level BPE vocabulary learnt from documents.
//!
//! ```toml
//! [stages.tokenizer]
//! plugin = "train-tokenizer"
//! inputs = { documents = "corpus_en.documents" }
//! params = { vocab_size = 4096 }
//! ```
//!
//! For models that do not start from a published checkpoint (the tiny demo): a 32,000-piece
//! vocabulary would make a 3M-parameter model spend most of its compute in the output layer.
//! The tokenizer is GPT-2's byte-level BPE (Sennrich et al. 2016, byte-level as in Radford et
//! al. 2019), trained by the HF `tokenizers` crate, so every byte sequence encodes and
//! transformers loads the result. The special tokens come first, in Llama's order
//! (`<unk>` 0, `<s>` 1, `</s>` 2), so Llama configs' `bos_token_id = 1`, `eos_token_id = 2` hold.
//! Every input is a documents input (JSONL files or folders, as the tokenize stage reads),
//! read in name order; the same documents and params give a byte-identical `tokenizer.json`.
//! Output: `tokenizer/{tokenizer.json, tokenizer_config.json, special_tokens_map.json}`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use leo_plugin::{kind, param_str, Emitter, Event, Invocation, ParamError, Plugin};
use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::input;

pub struct TrainTokenizer;

const KNOWN_PARAMS: &[&str] = &[
    "vocab_size",
    "min_frequency",
    "special_tokens",
    "text_field",
    "model_max_length",
];

/// The plugin's params, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// Pieces in all: special tokens, the 256 bytes and the merges.
    pub vocab_size: usize,
    /// A pair must occur this often to be merged.
    pub min_frequency: u64,
    /// Added first, in order: ids 0, 1, 2, …
    pub special_tokens: Vec<String>,
    pub text_field: String,
    /// `model_max_length` in tokenizer_config.json (transformers' truncation default).
    pub model_max_length: u64,
}

impl TrainParams {
    pub fn parse(params: &Value) -> Result<TrainParams, ParamError> {
        if let Value::Object(obj) = params {
            leo_plugin::reject_unknown_params(obj, "train-tokenizer", KNOWN_PARAMS)?;
        } else if !params.is_null() {
            return Err(ParamError::new("", "params must be a table"));
        }
        let integer = |field: &str| -> Result<Option<u64>, ParamError> {
            match params.get(field) {
                None => Ok(None),
                Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
                Some(other) => Err(ParamError::new(
                    field,
                    format!("must be a non-negative integer, found {}", kind(other)),
                )),
            }
        };
        let vocab_size = integer("vocab_size")?.ok_or_else(|| {
            ParamError::new("vocab_size", "is required (e.g. 4096): pieces in all")
        })?;
        let special_tokens = match params.get("special_tokens") {
            None => vec!["<unk>".into(), "<s>".into(), "</s>".into()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    other => Err(ParamError::new(
                        "special_tokens",
                        format!("must be non-empty strings, found {}", kind(other)),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ParamError::new(
                    "special_tokens",
                    format!("must be a list of strings, found {}", kind(other)),
                ))
            }
        };
        let minimum = 256 + special_tokens.len() as u64;
        if vocab_size <= minimum {
            return Err(ParamError::new(
                "vocab_size",
                format!(
                    "must exceed the 256 bytes plus {} special tokens ({minimum})",
                    special_tokens.len()
                ),
            ));
        }
        let text_field = match param_str(params, "text_field")? {
            Some("") => return Err(ParamError::new("text_field", "must not be empty")),
            Some(s) => s.to_string(),
            None => "text".into(),
        };
        Ok(TrainParams {
            vocab_size: vocab_size as usize,
            min_frequency: integer("min_frequency")?.unwrap_or(2),
            special_tokens,
            text_field,
            model_max_length: integer("model_max_length")?.unwrap_or(4096),
        })
    }
}

impl Plugin for TrainTokenizer {
    fn name(&self) -> &'static str {
        "train-tokenizer"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        TrainParams::parse(params)?;
        Ok(vec!["tokenizer".to_string()])
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let p = TrainParams::parse(&inv.params).map_err(|e| anyhow!("{e}"))?;
        if inv.inputs.is_empty() {
            bail!("the train-tokenizer stage needs at least one documents input");
        }
        let mut texts = Vec::new();
        let mut bytes = 0usize;
        for (name, artifact) in &inv.inputs {
            let before = texts.len();
            read_texts(&artifact.path, &p.text_field, &mut texts, &mut bytes)
                .with_context(|| format!("input `{name}`"))?;
            events.emit(&Event::Log {
                level: "info".into(),
                message: format!("input `{name}`: {} documents", texts.len() - before),
            })?;
        }
        events.progress(0, Some(1), "tokenizers")?;
        let started = std::time::Instant::now();
        let tokenizer = train(&p, &texts)?;
        let seconds = started.elapsed().as_secs_f64();
        events.progress(1, Some(1), "tokenizers")?;
        let out = inv.output_dir.join("tokenizer");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        write(&out, &tokenizer, &p)?;
        events.metric(None, "vocab_size", tokenizer.get_vocab_size(true) as f64)?;
        events.metric(None, "training_bytes", bytes as f64)?;
        events.emit(&Event::Log {
            level: "info".into(),
            message: format!(
                "{} pieces learnt from {} documents ({:.1} MB) in {seconds:.1} s",
                tokenizer.get_vocab_size(true),
                texts.len(),
                bytes as f64 / 1e6
            ),
        })?;
        events.output("tokenizer", &out)?;
        Ok(())
    }
}

/// Appends the text of every document under `path` (JSONL files, in name order).
fn read_texts(path: &Path, field: &str, texts: &mut Vec<String>, bytes: &mut usize) -> Result<()> {
    let files = input::discover(path)?;
    for batch in input::batches(files.clone(), 16 << 20) {
        for line in batch? {
            let doc = input::parse(&line, &files, field, "id").map_err(|why| {
                anyhow!("{}:{}: {why}", files[line.file].path.display(), line.line)
            })?;
            *bytes += doc.text.len();
            texts.push(doc.text);
        }
    }
    Ok(())
}

/// Trains the byte-level BPE. No prefix space is added (GPT-2's convention), so a text's
/// encoding is the concatenation its pieces suggest and lm-eval's pair encoding splits cleanly.
pub fn train(p: &TrainParams, texts: &[String]) -> Result<Tokenizer> {
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));
    tokenizer.with_post_processor(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(p.vocab_size)
        .min_frequency(p.min_frequency)
        .show_progress(false)
        .special_tokens(
            p.special_tokens
                .iter()
                .map(|t| AddedToken::from(t.clone(), true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the BPE: {e}"))?;
    let learnt = tokenizer.get_vocab_size(true);
    if learnt != p.vocab_size {
        bail!(
            "the documents yield only {learnt} pieces, not vocab_size = {}: give more text or \
             lower vocab_size / min_frequency",
            p.vocab_size
        );
    }
    for (id, token) in p.special_tokens.iter().enumerate() {
        if tokenizer.token_to_id(token) != Some(id as u32) {
            bail!("special token {token:?} did not get id {id}");
        }
    }
    Ok(tokenizer)
}

/// `tokenizer.json` plus the two files transformers' `AutoTokenizer` reads beside it.
fn write(dir: &Path, tokenizer: &Tokenizer, p: &TrainParams) -> Result<()> {
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, false)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    let special = |i: usize| p.special_tokens.get(i).cloned();
    let mut names = serde_json::Map::new();
    for (key, i) in [("unk_token", 0), ("bos_token", 1), ("eos_token", 2)] {
        if let Some(t) = special(i) {
            names.insert(key.into(), Value::String(t));
        }
    }
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": false,
        "add_eos_token": false,
        "model_max_length": p.model_max_length,
    });
    if let Value::Object(c) = &mut config {
        c.extend(names.clone());
    }
    for (file, value) in [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", Value::Object(names)),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let de = "Im Anfang schuf Gott die Himmel und die Erde. Und die Erde war wüst und leer.";
        let en = "In the beginning, God created the heavens and the earth. The earth was empty.";
        (0..200).map(|i| format!("{de} {i} {en}")).collect()
    }

    #[test]
    fn specials_come_first_and_training_is_reproducible() {
        let p = TrainParams::parse(&json!({"vocab_size": 320})).unwrap();
        let a = train(&p, &corpus()).unwrap();
        let b = train(&p, &corpus()).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert_eq!(a.token_to_id("<unk>"), Some(0));
        assert_eq!(a.token_to_id("<s>"), Some(1));
        assert_eq!(a.token_to_id("</s>"), Some(2));
        let text = "Über die Erde, 42 × ünicode ✓";
        let ids = a.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(
            a.decode(&ids, false).unwrap(),
            text,
            "byte-level: every text round-trips"
        );
    }

    #[test]
    fn too_little_text_for_the_vocabulary_is_an_error_not_a_smaller_vocabulary() {
        let p = TrainParams::parse(&json!({"vocab_size": 100_000})).unwrap();
        let e = train(&p, &corpus()).unwrap_err().to_string();
        assert!(e.contains("not vocab_size = 100000"), "{e}");
    }

    #[test]
    fn params_name_the_bad_field() {
        let field = |v: Value| TrainParams::parse(&v).unwrap_err().field;
        assert_eq!(field(json!({})), "vocab_size");
        assert_eq!(field(json!({"vocab_size": 200})), "vocab_size");
        assert_eq!(field(json!({"vocab_size": 4096, "vocab": 1})), "vocab");
        assert_eq!(
            field(json!({"vocab_size": 4096, "special_tokens": [1]})),
            "special_tokens"
        );
    }
}
