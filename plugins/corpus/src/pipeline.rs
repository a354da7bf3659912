//! The stage's work: read → normalise → filter (all cores) → spill dedup keys → cluster →
//! write the kept documents as zstd JSONL shards, with statistics for every step.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, OnMalformed};
use crate::doc::Doc;
use crate::language::{self, LanguageId};
use crate::minhash::MinHasher;
use crate::read::{self, Batch, InputFile, Records};
use crate::segments::{self, Progress, SegmentWriter};
use crate::{normalize, quality};

/// Where the stage reads and writes.
pub struct Paths {
    pub inputs: Vec<(String, PathBuf)>,
    pub language_model: Option<PathBuf>,
    pub work: PathBuf,
    pub documents: PathBuf,
    pub stats: PathBuf,
    /// Where checkpoints go (`step-N/`), and the checkpoint to continue from.
    pub checkpoints: Option<PathBuf>,
    pub resume_from: Option<PathBuf>,
}

/// Progress and results as they happen (the plugin turns them into events).
pub trait Report {
    fn progress(&self, docs: u64, bytes: u64);
    fn log(&self, message: &str);
    /// A complete checkpoint folder; an error stops the stage.
    fn checkpoint(&self, _dir: &Path, _step: u64) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub documents: u64,
    pub bytes: u64,
    pub reasons: BTreeMap<String, u64>,
}

impl Removed {
    fn add(&mut self, bytes: usize, reason: &str) {
        self.documents += 1;
        self.bytes += bytes as u64;
        *self.reasons.entry(reason.to_string()).or_default() += 1;
    }

    fn merge(&mut self, other: &Removed) {
        self.documents += other.documents;
        self.bytes += other.bytes;
        for (k, v) in &other.reasons {
            *self.reasons.entry(k.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub files: u64,
    pub documents_in: u64,
    pub bytes_in: u64,
    pub malformed: u64,
    /// The first malformed records, as `FILE:LINE: why`.
    pub malformed_examples: Vec<String>,
    /// In pipeline order.
    pub filters: Vec<(String, Removed)>,
    pub exact_dedup: Removed,
    pub minhash_dedup: Removed,
    pub minhash_clusters: u64,
    pub documents_out: u64,
    pub bytes_out: u64,
    pub shards: u64,
    pub seconds: f64,
    pub language_backend: String,
}

const FILTERS: [&str; 6] = [
    "language",
    "oscar",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb_quality",
];

struct Kept {
    line: String,
    text_bytes: u32,
    exact: u128,
    buckets: Option<Vec<u128>>,
}

#[derive(Default)]
struct BatchResult {
    kept: Vec<Kept>,
    malformed: Vec<String>,
    documents: u64,
    bytes: u64,
    removed: Vec<Removed>,
}

struct Workers<'a> {
    config: &'a Config,
    language: Option<LanguageId>,
    minhash: Option<MinHasher>,
    files: &'a [InputFile],
}

impl Workers<'_> {
    fn process(&self, batch: Batch) -> BatchResult {
        let mut out = BatchResult {
            removed: vec![Removed::default(); FILTERS.len()],
            ..Default::default()
        };
        let file = &self.files[batch.file].name;
        let text_lines = matches!(self.config.format, crate::config::Format::Text)
            || read::kind_of(&self.files[batch.file].path) == Some(read::FileKind::Text);
        let docs: Vec<Result<Doc, String>> = match batch.records {
            Records::Lines(lines) => lines
                .into_iter()
                .enumerate()
                .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
                .map(|(i, l)| {
                    let line = batch.first_line + i as u64;
                    match l {
                        Err(e) => Err(e),
                        Ok(l) if text_lines => Ok(read::text_doc(l, file, line)),
                        Ok(l) => match serde_json::from_str::<Value>(&l) {
                            Ok(v) => read::record_to_doc(v, self.config, file, line),
                            Err(e) => Err(format!("invalid JSON: {e}")),
                        },
                    }
                    .map_err(|e| format!("{file}:{line}: {e}"))
                })
                .collect(),
            Records::Texts(texts) => texts
                .into_iter()
                .map(|(line, t)| Ok(read::text_doc(t, file, line)))
                .collect(),
            Records::Rows(rows) => rows
                .into_iter()
                .enumerate()
                .map(|(i, row)| {
                    let line = batch.first_line + i as u64;
                    read::record_to_doc(row, self.config, file, line)
                        .map_err(|e| format!("{file}: row {line}: {e}"))
                })
                .collect(),
        };
        for doc in docs {
            match doc {
                Ok(doc) => self.one(doc, &mut out),
                Err(e) => out.malformed.push(e),
            }
        }
        out
    }

    fn one(&self, mut doc: Doc, out: &mut BatchResult) {
        out.documents += 1;
        out.bytes += doc.text.len() as u64;
        let text = std::mem::take(&mut doc.text);
        doc.set_text(normalize::normalize(&self.config.normalize, text));
        let f = &self.config.filters;
        for (i, name) in FILTERS.iter().enumerate() {
            let verdict = match *name {
                "language" if f.language.enabled => {
                    self.language.as_ref().map_or(Ok(()), |l| l.check(&mut doc))
                }
                "oscar" if f.oscar.enabled => language::oscar(&f.oscar, &doc),
                "gopher_repetition" if f.gopher_repetition.enabled => {
                    quality::gopher_repetition(&f.gopher_repetition, &mut doc)
                }
                "gopher_quality" if f.gopher_quality.enabled => {
                    quality::gopher_quality(&f.gopher_quality, &mut doc)
                }
                "c4" if f.c4.enabled => quality::c4(&f.c4, &mut doc),
                "fineweb_quality" if f.fineweb_quality.enabled => {
                    quality::fineweb_quality(&f.fineweb_quality, &mut doc)
                }
                _ => Ok(()),
            };
            if let Err(reason) = verdict {
                out.removed[i].add(doc.text.len(), &reason);
                return;
            }
        }
        let exact = xxhash_rust::xxh3::xxh3_128(doc.text.as_bytes());
        let buckets = self.minhash.as_ref().and_then(|m| {
            let sig = m.signature(&doc.text)?;
            let keys = sig
                .chunks(m.hashes_per_bucket())
                .map(|band| {
                    let bytes: Vec<u8> = band.iter().flat_map(|v| v.to_le_bytes()).collect();
                    xxhash_rust::xxh3::xxh3_128(&bytes)
                })
                .collect();
            Some(keys)
        });
        let line = json!({
            "id": doc.id,
            "text": doc.text,
            "source": {"file": doc.file, "line": doc.line},
            "meta": doc.meta,
        })
        .to_string();
        out.kept.push(Kept {
            text_bytes: u32::try_from(doc.text.len()).unwrap_or(u32::MAX),
            line,
            exact,
            buckets,
        });
    }
}

pub fn run(config: &Config, paths: &Paths, report: &dyn Report) -> Result<Stats> {
    let started = Instant::now();
    let files = read::discover(&paths.inputs)?;
    read::ensure_inputs(&files)?;
    let language = if config.filters.language.enabled {
        Some(LanguageId::new(
            &config.filters.language,
            paths.language_model.as_deref(),
        )?)
    } else {
        None
    };
    let m = &config.dedup.minhash;
    let workers = Workers {
        config,
        minhash: m.enabled.then(|| MinHasher::new(m)),
        language,
        files: &files,
    };
    let mut stats = Stats {
        files: files.len() as u64,
        filters: FILTERS
            .iter()
            .map(|f| (f.to_string(), Removed::default()))
            .collect(),
        language_backend: workers
            .language
            .as_ref()
            .map_or("off".into(), |l| l.backend().to_string()),
        ..Default::default()
    };
    std::fs::create_dir_all(&paths.work)
        .with_context(|| format!("creating {}", paths.work.display()))?;
    let buckets = if m.enabled { m.buckets } else { 0 };
    let exact = config.dedup.exact.enabled;
    let config_json = serde_json::to_value(config)?;

    // Continue from a checkpoint made with the same params; otherwise start over.
    let mut segments: Vec<PathBuf> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut batches_done = 0u64;
    let mut kept_count: u32 = 0;
    // Time spent by earlier attempts, so rates count every attempt's work and time.
    let mut earlier_seconds = 0.0;
    if let Some(dir) = &paths.resume_from {
        let (progress, dirs) = segments::read_checkpoint(dir)?;
        if progress.config == config_json {
            report.log(&format!(
                "continuing after {} input batches ({} documents) from {}",
                progress.batches,
                progress.stats.documents_in,
                dir.display()
            ));
            batches_done = progress.batches;
            kept_count = progress.kept;
            earlier_seconds = progress.stats.seconds;
            stats = Stats {
                language_backend: stats.language_backend,
                ..progress.stats
            };
            segments = dirs;
            names = progress.segments;
        } else {
            report.log("the checkpoint was made with other params: starting over");
        }
    }
    let open_segment = |names: &mut Vec<String>| -> Result<SegmentWriter> {
        let name = format!("segment-{:05}", names.len());
        let writer = SegmentWriter::create(&paths.work.join(&name), exact, buckets)?;
        names.push(name);
        Ok(writer)
    };
    let mut segment = open_segment(&mut names)?;
    let mut since_checkpoint = 0u64;
    // Small batches, many in flight: documents vary from a line to megabytes.
    let group = rayon::current_num_threads() * 16;

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(group);
        let files = &files;
        scope.spawn(move || {
            let batches = read::Batches::new(files, config, 256 << 10).skip(batches_done as usize);
            for batch in batches {
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        let mut pending = Vec::with_capacity(group);
        loop {
            pending.clear();
            for batch in rx.iter().take(group) {
                pending.push(batch?);
            }
            if pending.is_empty() {
                break;
            }
            batches_done += pending.len() as u64;
            let results: Vec<BatchResult> = std::mem::take(&mut pending)
                .into_par_iter()
                .map(|b| workers.process(b))
                .collect();
            for r in results {
                stats.documents_in += r.documents;
                since_checkpoint += r.documents;
                stats.bytes_in += r.bytes;
                for (slot, removed) in stats.filters.iter_mut().zip(&r.removed) {
                    slot.1.merge(removed);
                }
                for e in r.malformed {
                    stats.malformed += 1;
                    if config.on_malformed == OnMalformed::Fail {
                        bail!("malformed record (on_malformed = \"fail\"): {e}");
                    }
                    if stats.malformed_examples.len() < 20 {
                        report.log(&format!("skipping malformed record {e}"));
                        stats.malformed_examples.push(e);
                    }
                }
                for k in r.kept {
                    segment.add(
                        kept_count,
                        &k.line,
                        k.text_bytes,
                        k.exact,
                        k.buckets.as_deref(),
                    )?;
                    kept_count = kept_count
                        .checked_add(1)
                        .context("more than 4 billion documents in one stage: split the input")?;
                }
            }
            report.progress(stats.documents_in, stats.bytes_in);
            if let Some(dir) = &paths.checkpoints {
                if config.checkpoint_docs > 0 && since_checkpoint >= config.checkpoint_docs {
                    stats.seconds = earlier_seconds + started.elapsed().as_secs_f64();
                    let closed = std::mem::replace(&mut segment, open_segment(&mut names)?);
                    segments.push(closed.close()?);
                    let progress = Progress {
                        batches: batches_done,
                        kept: kept_count,
                        stats: std::mem::take(&mut stats),
                        segments: names[..segments.len()].to_vec(),
                        config: config_json.clone(),
                    };
                    let written = segments::write_checkpoint(dir, &segments, &progress)?;
                    stats = progress.stats;
                    report.checkpoint(&written, batches_done)?;
                    since_checkpoint = 0;
                }
            }
        }
        Ok(())
    })?;
    segments.push(segment.close()?);
    let spills: Vec<PathBuf> = segments.iter().map(|s| s.join("dedup")).collect();
    let mut clusters = crate::dedup::cluster(&spills, exact, buckets, kept_count)?;
    write_output(config, paths, &segments, &mut clusters, &mut stats)?;
    stats.seconds = earlier_seconds + started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Copies the documents that survive dedup into shards; records cluster membership.
fn write_output(
    config: &Config,
    paths: &Paths,
    segments: &[PathBuf],
    clusters: &mut crate::dedup::Clusters,
    stats: &mut Stats,
) -> Result<()> {
    std::fs::create_dir_all(&paths.documents)?;
    std::fs::create_dir_all(&paths.stats)?;
    let mut text_bytes: Vec<u32> = Vec::new();
    let mut readers: Vec<Box<dyn BufRead>> = Vec::new();
    for dir in segments {
        let lens = std::fs::read(dir.join("lens.bin"))
            .with_context(|| format!("reading {}", dir.display()))?;
        text_bytes.extend(
            lens.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        let kept = dir.join("kept.jsonl.zst");
        readers.push(Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::Decoder::new(
                File::open(&kept).with_context(|| format!("opening {}", kept.display()))?,
            )?,
        )));
    }
    let reader = readers.into_iter().flat_map(|r| r.lines());
    let mut members: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut shard: Option<zstd::Encoder<'static, BufWriter<File>>> = None;
    let mut in_shard = 0usize;
    for (i, line) in reader.enumerate() {
        let line = line.context("reading back the filtered documents")?;
        let Some(&bytes) = text_bytes.get(i) else {
            bail!("the segments hold more documents than lengths: a checkpoint is damaged");
        };
        let (i, bytes) = (i as u32, bytes as usize);
        let root = clusters.root(i);
        if clusters.cluster_size(i) > 1 {
            let id = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["id"].as_str().map(String::from))
                .unwrap_or_default();
            members.entry(root).or_default().push(id);
        }
        if root != i {
            if clusters.exact_dups[i as usize] {
                stats.exact_dedup.add(bytes, "exact_duplicate");
            } else {
                stats.minhash_dedup.add(bytes, "near_duplicate");
            }
            continue;
        }
        if shard.is_none() || in_shard >= config.shard_docs {
            if let Some(done) = shard.take() {
                done.finish()?.flush()?;
            }
            let path = paths
                .documents
                .join(format!("part-{:05}.jsonl.zst", stats.shards));
            shard = Some(zstd::Encoder::new(
                BufWriter::new(
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?,
                ),
                3,
            )?);
            stats.shards += 1;
            in_shard = 0;
        }
        if let Some(w) = shard.as_mut() {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        in_shard += 1;
        stats.documents_out += 1;
        stats.bytes_out += bytes as u64;
    }
    if let Some(done) = shard.take() {
        done.finish()?.flush()?;
    }
    stats.minhash_clusters = members.len() as u64;
    let path = paths.stats.join("clusters.jsonl");
    let mut w = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for ids in members.values() {
        serde_json::to_writer(&mut w, ids)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}
