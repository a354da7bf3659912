//! The `corpus` stage plugin: raw web text in, clean deduplicated documents out.
//!
//! ```toml
//! [stages.corpus]
//! plugin = "corpus"
//! inputs = { oscar = "file:///data/oscar-2301/de/", language_model = "file:///models/lid.176.bin" }
//! params.filters.gopher_quality = { min_doc_words = 50 }
//! params.dedup.minhash = { buckets = 14, hashes_per_bucket = 8 }
//! ```
//!
//! Every input except `language_model` is a file or folder of documents. The filters and
//! MinHash follow datatrove rule for rule (including its German word splitting, ported
//! from spaCy in [`words`]), with FineWeb-2's German settings as defaults; see
//! `docs/corpus.md`. Outputs: `documents` (zstd JSONL shards: `id`, `text`, `source`,
//! `meta`) and `stats` (`stats.json`, `summary.txt`, `clusters.jsonl`).

pub mod config;
pub mod dedup;
pub mod doc;
pub mod fasttext_ids;
pub mod language;
pub mod minhash;
pub mod normalize;
pub mod pipeline;
pub mod pytext;
pub mod quality;
pub mod read;
pub mod segments;
pub mod summary;
pub mod words;

use std::time::Instant;

use anyhow::{Context, Result};
use leo_plugin::{Emitter, Event, Invocation, ParamError, Plugin};
use serde_json::Value;

pub use config::Config;

pub struct Corpus;

/// The input that names a fastText language-identification model instead of documents.
pub const LANGUAGE_MODEL_INPUT: &str = "language_model";

impl Plugin for Corpus {
    fn name(&self) -> &'static str {
        "corpus"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        Config::from_params(params)?;
        Ok(vec!["documents".into(), "stats".into()])
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let config = Config::from_params(&inv.params).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut inputs = Vec::new();
        let mut language_model = None;
        for (name, input) in &inv.inputs {
            if name == LANGUAGE_MODEL_INPUT {
                language_model = Some(model_file(&input.path)?);
            } else {
                inputs.push((name.clone(), input.path.clone()));
            }
        }
        anyhow::ensure!(
            !inputs.is_empty(),
            "the corpus stage needs at least one input of documents (inputs = {{ web = \"file:///…\" }})"
        );
        let paths = pipeline::Paths {
            inputs,
            language_model,
            work: inv.work_dir.join("corpus-work"),
            documents: inv.output_dir.join("documents"),
            stats: inv.output_dir.join("stats"),
            checkpoints: Some(inv.checkpoint_dir.clone()),
            resume_from: inv.resume_from.as_ref().map(|r| r.path.clone()),
        };
        let report = EventReport {
            events,
            started: Instant::now(),
        };
        let stats = pipeline::run(&config, &paths, &report)?;
        let summary = summary::render(&stats);
        eprintln!("{summary}");
        std::fs::write(paths.stats.join("summary.txt"), &summary)
            .with_context(|| format!("writing {}", paths.stats.display()))?;
        let json = serde_json::to_string_pretty(&summary::to_json(&stats, &config))?;
        std::fs::write(paths.stats.join("stats.json"), json + "\n")?;
        for (name, value) in summary::metrics(&stats) {
            events.metric(None, &name, value)?;
        }
        std::fs::remove_dir_all(&paths.work).ok();
        events.output("documents", &paths.documents)?;
        events.output("stats", &paths.stats)?;
        Ok(())
    }
}

/// A model input may be the file or a folder holding one `.bin`/`.ftz`.
fn model_file(path: &std::path::Path) -> Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let p = entry?.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("bin" | "ftz")) {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => anyhow::bail!(
            "input `{LANGUAGE_MODEL_INPUT}`: expected one fastText model (.bin or .ftz) in {}, found {n}",
            path.display()
        ),
    }
}

struct EventReport<'a> {
    events: &'a Emitter,
    started: Instant,
}

impl pipeline::Report for EventReport<'_> {
    fn progress(&self, docs: u64, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        // Events are best effort: a closed stdout surfaces when the outputs are reported.
        let _ = self.events.progress(docs, None, "docs");
        let _ = self.events.emit(&Event::Metric {
            step: None,
            name: "docs_per_second".into(),
            value: docs as f64 / secs,
        });
        let _ = self.events.emit(&Event::Metric {
            step: None,
            name: "mb_per_second".into(),
            value: bytes as f64 / 1e6 / secs,
        });
    }

    fn log(&self, message: &str) {
        let _ = self.events.emit(&Event::Log {
            level: "warn".into(),
            message: message.to_string(),
        });
    }

    fn checkpoint(&self, dir: &std::path::Path, step: u64) -> Result<()> {
        self.events
            .checkpoint(step, dir)
            .context("reporting a checkpoint")
    }
}
