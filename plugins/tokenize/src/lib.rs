//! The `tokenize` stage plugin: JSONL documents to Megatron token shards.
//!
//! ```toml
//! [stages.tokenize]
//! plugin = "tokenize"
//! inputs = { documents = "dedup.documents", tokenizer = "${vars.tokenizer}" }
//! params = { validation_fraction = 0.005, seed = 0 }
//! ```
//!
//! Every document becomes BOS, the ids of its text (no special tokens), EOS. Documents go to
//! `validation` or `train` by a hash of their id and the seed, are shuffled by another hash
//! (see [`shuffle`]) and written as Megatron `.bin`/`.idx` shards ([`leo_indexed`]) with a
//! `meta.json`. Output: `tokens/{train,validation}/shard-NNNNN.{bin,idx}`, `tokens/meta.json`.
//! The same input and params give byte-identical output on any number of threads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use leo_indexed::DType;
use leo_plugin::{kind, param_str, Emitter, Event, Invocation, ParamError, Plugin};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod encode;
pub mod input;
pub mod shuffle;
pub mod train;

use encode::{Chunking, Encoder};
use shuffle::{ShardInfo, Spill};

pub struct Tokenize;

const KNOWN_PARAMS: &[&str] = &[
    "text_field",
    "id_field",
    "bos",
    "eos",
    "bos_token",
    "eos_token",
    "chunk_chars",
    "validation_fraction",
    "seed",
    "shard_tokens",
    "on_malformed",
];

/// Text read per batch: bounds memory (two batches are in flight) while giving every
/// thread plenty of documents.
const BATCH_BYTES: usize = 16 << 20;
/// Malformed lines reported one by one; the rest are counted.
const MALFORMED_REPORTED: u64 = 20;

/// The plugin's params, defaults filled in (recorded in meta.json).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub text_field: String,
    pub id_field: String,
    pub bos: bool,
    pub eos: bool,
    pub bos_token: String,
    pub eos_token: String,
    /// Documents longer than this (bytes of UTF-8) are encoded in pieces cut after newlines,
    /// when that provably gives the same ids; 0: never.
    pub chunk_chars: u64,
    pub validation_fraction: f64,
    pub seed: u64,
    pub shard_tokens: u64,
    /// `skip` (count and report) or `fail`.
    pub on_malformed: String,
}

impl Params {
    pub fn parse(params: &Value) -> Result<Params, ParamError> {
        let obj = match params {
            Value::Object(o) => o.clone(),
            Value::Null => Default::default(),
            _ => return Err(ParamError::new("", "params must be a table")),
        };
        leo_plugin::reject_unknown_params(&obj, "tokenize", KNOWN_PARAMS)?;
        let string = |f: &str, default: &str| -> Result<String, ParamError> {
            match param_str(params, f)? {
                Some("") => Err(ParamError::new(f, "must not be empty")),
                Some(s) => Ok(s.to_string()),
                None => Ok(default.to_string()),
            }
        };
        let p = Params {
            text_field: string("text_field", "text")?,
            id_field: string("id_field", "id")?,
            bos: param_bool(params, "bos", true)?,
            eos: param_bool(params, "eos", true)?,
            bos_token: string("bos_token", "<s>")?,
            eos_token: string("eos_token", "</s>")?,
            chunk_chars: param_u64(params, "chunk_chars", 4096)?,
            validation_fraction: param_f64(params, "validation_fraction", 0.005)?,
            seed: param_u64(params, "seed", 0)?,
            shard_tokens: param_u64(params, "shard_tokens", 1 << 30)?,
            on_malformed: string("on_malformed", "skip")?,
        };
        if !(0.0..=1.0).contains(&p.validation_fraction) {
            return Err(ParamError::new(
                "validation_fraction",
                "must be between 0 and 1",
            ));
        }
        if p.shard_tokens == 0 {
            return Err(ParamError::new("shard_tokens", "must be positive"));
        }
        if !matches!(p.on_malformed.as_str(), "skip" | "fail") {
            return Err(ParamError::new(
                "on_malformed",
                format!("must be \"skip\" or \"fail\", not {:?}", p.on_malformed),
            ));
        }
        for (flag, token) in [("bos", "bos_token"), ("eos", "eos_token")] {
            if params.get(token).is_some() && params.get(flag) == Some(&Value::Bool(false)) {
                return Err(ParamError::new(
                    token,
                    format!("is set but {flag} = false adds no such token"),
                ));
            }
        }
        Ok(p)
    }
}

fn param_bool(params: &Value, field: &str, default: bool) -> Result<bool, ParamError> {
    match params.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ParamError::new(
            field,
            format!("must be true or false, found {}", kind(other)),
        )),
    }
}

fn param_u64(params: &Value, field: &str, default: u64) -> Result<u64, ParamError> {
    match params.get(field) {
        None => Ok(default),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64().unwrap_or(default)),
        Some(Value::Number(n)) if n.is_i64() => Err(ParamError::new(field, "must not be negative")),
        Some(other) => Err(ParamError::new(
            field,
            format!("must be an integer, found {}", kind(other)),
        )),
    }
}

fn param_f64(params: &Value, field: &str, default: f64) -> Result<f64, ParamError> {
    match params.get(field) {
        None => Ok(default),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(default)),
        Some(other) => Err(ParamError::new(
            field,
            format!("must be a number, found {}", kind(other)),
        )),
    }
}

/// Counts of one split in meta.json.
#[derive(Debug, Serialize)]
struct SplitMeta {
    documents: u64,
    tokens: u64,
    shards: Vec<ShardInfo>,
}

/// `tokens/meta.json`: what the shards hold and how they were made (no paths, no times).
#[derive(Debug, Serialize)]
struct Meta {
    format: &'static str,
    tokenizer: TokenizerMeta,
    dtype: &'static str,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    seed: u64,
    documents: u64,
    empty_documents: u64,
    malformed_lines: u64,
    train: SplitMeta,
    validation: SplitMeta,
    params: Params,
}

#[derive(Debug, Serialize)]
struct TokenizerMeta {
    sha256: String,
    vocab_size: usize,
}

impl Plugin for Tokenize {
    fn name(&self) -> &'static str {
        "tokenize"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        Params::parse(params)?;
        Ok(vec!["tokens".to_string()])
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let p = Params::parse(&inv.params).map_err(|e| anyhow!("{e}"))?;
        let input = |name: &str| {
            inv.inputs.get(name).map(|a| a.path.clone()).with_context(|| {
                format!("input `{name}` is missing: the tokenize stage reads `documents` and `tokenizer`")
            })
        };
        let documents = input("documents")?;
        let tokenizer_path = tokenizer_file(&input("tokenizer")?)?;
        let out = inv.output_dir.join("tokens");
        let spill_dir = inv.work_dir.join("tokenize-spill");
        let result = tokenize(&p, &documents, &tokenizer_path, &out, &spill_dir, events);
        // The spill is scratch space, on failure too.
        let _ = std::fs::remove_dir_all(&spill_dir);
        result?;
        events.output("tokens", &out)?;
        Ok(())
    }
}

/// The `tokenizer` input: a `tokenizer.json`, or a folder holding one.
fn tokenizer_file(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        let f = path.join("tokenizer.json");
        if !f.is_file() {
            bail!(
                "{}: the tokenizer folder has no tokenizer.json",
                path.display()
            );
        }
        return Ok(f);
    }
    Ok(path.to_path_buf())
}

fn log(events: &Emitter, level: &str, message: String) -> Result<()> {
    events.emit(&Event::Log {
        level: level.to_string(),
        message,
    })?;
    Ok(())
}

/// Loads a tokenizer.json: the tokenizer and the SHA-256 of the file.
pub fn load_tokenizer(path: &Path) -> Result<(tokenizers::Tokenizer, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let tok = tokenizers::Tokenizer::from_bytes(&bytes)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading tokenizer {}", path.display()))?;
    Ok((tok, sha))
}

/// The encoder a run with these params uses (also what the benchmark measures).
pub fn encoder(p: &Params, tokenizer: tokenizers::Tokenizer) -> Result<Encoder> {
    let special = |on: bool, token: &str, flag: &str| -> Result<Option<u32>> {
        if !on {
            return Ok(None);
        }
        tokenizer.token_to_id(token).map(Some).with_context(|| {
            format!(
                "the tokenizer has no `{token}` token: name its {flag} token in \
                 params.{flag}_token, or set {flag} = false"
            )
        })
    };
    let bos = special(p.bos, &p.bos_token, "bos")?;
    let eos = special(p.eos, &p.eos_token, "eos")?;
    let chunk = usize::try_from(p.chunk_chars).unwrap_or(usize::MAX);
    Encoder::new(tokenizer, chunk, bos, eos)
}

fn tokenize(
    p: &Params,
    documents: &Path,
    tokenizer_path: &Path,
    out: &Path,
    spill_dir: &Path,
    events: &Emitter,
) -> Result<()> {
    let (tokenizer, sha256) = load_tokenizer(tokenizer_path)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let max_id = tokenizer.get_vocab(true).into_values().max().unwrap_or(0) as usize;
    let dtype = DType::for_vocab(vocab_size.max(max_id + 1))?;
    let encoder = encoder(p, tokenizer)?;
    match encoder.chunking() {
        Chunking::On(n) => log(
            events,
            "info",
            format!("documents longer than {n} bytes are encoded in pieces cut after newlines"),
        )?,
        Chunking::Off(why) if p.chunk_chars > 0 => log(
            events,
            "warn",
            format!("long documents are encoded whole (slower): cutting them is not proven safe for this tokenizer: {why}"),
        )?,
        Chunking::Off(_) => {}
    }
    if let Some(space) = encoder.word_split() {
        log(
            events,
            "info",
            format!("words are encoded one by one, cut before `{space}` (no merge joins across)"),
        )?;
    }
    let files = input::discover(documents)?;
    log(
        events,
        "info",
        format!(
            "{} input file(s), {} token files, {} threads",
            files.len(),
            dtype.name(),
            rayon::current_num_threads()
        ),
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    if spill_dir.exists() {
        std::fs::remove_dir_all(spill_dir)
            .with_context(|| format!("clearing {}", spill_dir.display()))?;
    }
    let mut train = Spill::create(&spill_dir.join("train"), dtype)?;
    let mut validation = Spill::create(&spill_dir.join("validation"), dtype)?;

    let start = Instant::now();
    let (mut docs_done, mut empty, mut malformed) = (0u64, 0u64, 0u64);
    for batch in input::batches(files.clone(), BATCH_BYTES) {
        let batch = batch?;
        let parsed: Vec<_> = batch
            .par_iter()
            .map(|line| {
                input::parse(line, &files, &p.text_field, &p.id_field).map(|doc| {
                    let (split, key) = shuffle::keys(p.seed, &doc.id);
                    (doc, split, key)
                })
            })
            .collect();
        let mut docs = Vec::with_capacity(parsed.len());
        for (line, r) in batch.iter().zip(parsed) {
            match r {
                Ok(d) if d.0.text.is_empty() => empty += 1,
                Ok(d) => docs.push(d),
                Err(why) => {
                    let at = format!("{}:{}", files[line.file].path.display(), line.line);
                    if p.on_malformed == "fail" {
                        bail!("{at}: {why} (params.on_malformed = \"fail\")");
                    }
                    malformed += 1;
                    if malformed <= MALFORMED_REPORTED {
                        log(events, "warn", format!("{at}: {why}; line skipped"))?;
                    }
                }
            }
        }
        let texts: Vec<&str> = docs.iter().map(|d| d.0.text.as_str()).collect();
        let ids = encoder.encode_batch(&texts)?;
        for ((_, split, key), ids) in docs.iter().zip(ids) {
            let spill = if shuffle::is_validation(*split, p.validation_fraction) {
                &mut validation
            } else {
                &mut train
            };
            spill.add(*key, docs_done, &ids)?;
            docs_done += 1;
        }
        events.progress(docs_done, None, "documents")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if malformed > 0 {
        log(
            events,
            "warn",
            format!("{malformed} malformed line(s) skipped (params.on_malformed = \"fail\" stops at the first)"),
        )?;
    }
    let tokens = train.tokens + validation.tokens;
    let (train_docs, train_tokens) = (train.documents, train.tokens);
    let (val_docs, val_tokens) = (validation.documents, validation.tokens);
    let train_shards = train.into_shards(&out.join("train"), p.shard_tokens)?;
    let val_shards = validation.into_shards(&out.join("validation"), p.shard_tokens)?;

    let meta = Meta {
        format: "Megatron-LM indexed dataset (MMIDIDX v1), one sequence per document",
        tokenizer: TokenizerMeta { sha256, vocab_size },
        dtype: dtype.name(),
        bos_id: encoder.bos(),
        eos_id: encoder.eos(),
        seed: p.seed,
        documents: docs_done,
        empty_documents: empty,
        malformed_lines: malformed,
        train: SplitMeta {
            documents: train_docs,
            tokens: train_tokens,
            shards: train_shards,
        },
        validation: SplitMeta {
            documents: val_docs,
            tokens: val_tokens,
            shards: val_shards,
        },
        params: p.clone(),
    };
    let text = serde_json::to_string_pretty(&meta).context("serialising meta.json")? + "\n";
    let meta_path = out.join("meta.json");
    std::fs::write(&meta_path, text).with_context(|| format!("writing {}", meta_path.display()))?;

    events.progress(docs_done, Some(docs_done), "documents")?;
    events.metric(None, "documents", docs_done as f64)?;
    events.metric(None, "tokens_train", train_tokens as f64)?;
    events.metric(None, "tokens_validation", val_tokens as f64)?;
    events.metric(None, "tokens_per_second", tokens as f64 / seconds.max(1e-9))?;
    if malformed > 0 {
        events.metric(None, "malformed_lines", malformed as f64)?;
    }
    log(
        events,
        "info",
        format!(
            "{docs_done} documents, {tokens} tokens ({train_tokens} train, {val_tokens} validation) in {seconds:.1} s"
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_checks_params() {
        let p = Tokenize;
        assert_eq!(p.describe(&json!({})).unwrap(), vec!["tokens"]);
        let field = |v: Value| p.describe(&v).unwrap_err().field;
        assert_eq!(field(json!({"seed": "1"})), "seed");
        assert_eq!(field(json!({"seed": -1})), "seed");
        assert_eq!(field(json!({"bos": 1})), "bos");
        assert_eq!(
            field(json!({"validation_fraction": 1.5})),
            "validation_fraction"
        );
        assert_eq!(field(json!({"shard_tokens": 0})), "shard_tokens");
        assert_eq!(field(json!({"on_malformed": "ignore"})), "on_malformed");
        assert_eq!(field(json!({"text_field": ""})), "text_field");
        assert_eq!(
            field(json!({"bos": false, "bos_token": "<s>"})),
            "bos_token"
        );
        let e = p.describe(&json!({"chunk_size": 1})).unwrap_err();
        assert_eq!(e.field, "chunk_size");
        assert!(e.message.contains("known: text_field"), "{}", e.message);
        let all = Params::parse(&json!({"text_field": "content", "seed": 3, "eos": false,
                                        "chunk_chars": 0, "validation_fraction": 0}))
        .unwrap();
        assert_eq!(
            (all.text_field.as_str(), all.seed, all.eos, all.chunk_chars),
            ("content", 3, false, 0)
        );
        assert_eq!(all.validation_fraction, 0.0);
    }
}
