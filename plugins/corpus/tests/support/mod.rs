//! Shared helpers of the corpus tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use leo_plugin_corpus::config::Config;
use leo_plugin_corpus::pipeline::{self, Paths, Report, Stats};

pub fn shared_data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        root.join("corpus-de/debian-docs-de.jsonl.zst").exists(),
        "this test needs ../shared/data (corpus-de, oscar) beside the repository"
    );
    root
}

pub fn corpus() -> PathBuf {
    shared_data().join("corpus-de/debian-docs-de.jsonl.zst")
}

/// Only reading: no normalisation, no filter, no dedup (tests switch on what they check).
pub fn reading_only() -> Config {
    let mut c = Config::default();
    c.normalize.nfc = false;
    c.normalize.whitespace = false;
    c.dedup.exact.enabled = false;
    c.dedup.minhash.enabled = false;
    let f = &mut c.filters;
    f.language.enabled = false;
    f.oscar.enabled = false;
    f.gopher_repetition.enabled = false;
    f.gopher_quality.enabled = false;
    f.fineweb_quality.enabled = false;
    f.c4.enabled = false;
    c
}

/// Records what the stage reports.
#[derive(Default)]
pub struct Recorder {
    pub logs: Mutex<Vec<String>>,
    pub progress: Mutex<Vec<u64>>,
    pub checkpoints: Mutex<Vec<(PathBuf, u64)>>,
    /// Fail when asked to report this checkpoint (1-based): a stage killed right there.
    pub fail_at_checkpoint: Option<usize>,
}

impl Report for Recorder {
    fn progress(&self, docs: u64, _bytes: u64) {
        self.progress.lock().unwrap().push(docs);
    }
    fn log(&self, message: &str) {
        self.logs.lock().unwrap().push(message.to_string());
    }
    fn checkpoint(&self, dir: &Path, step: u64) -> anyhow::Result<()> {
        let mut all = self.checkpoints.lock().unwrap();
        all.push((dir.to_path_buf(), step));
        if Some(all.len()) == self.fail_at_checkpoint {
            anyhow::bail!("killed after checkpoint {step}");
        }
        Ok(())
    }
}

/// Runs the stage on the shared corpus into `out/{documents,stats}`.
pub fn run_stage(config: &Config, out: &Path, language_model: Option<&Path>) -> Stats {
    run_on(
        config,
        vec![("corpus".into(), corpus())],
        out,
        language_model,
        &Recorder::default(),
    )
}

pub fn run_on(
    config: &Config,
    inputs: Vec<(String, PathBuf)>,
    out: &Path,
    language_model: Option<&Path>,
    report: &Recorder,
) -> Stats {
    try_run(config, inputs, out, language_model, None, report).expect("the corpus stage runs")
}

/// One attempt with checkpoints in `out/checkpoints`, maybe resuming from `resume_from`.
pub fn try_run(
    config: &Config,
    inputs: Vec<(String, PathBuf)>,
    out: &Path,
    language_model: Option<&Path>,
    resume_from: Option<&Path>,
    report: &Recorder,
) -> anyhow::Result<Stats> {
    let paths = Paths {
        inputs,
        language_model: language_model.map(Path::to_path_buf),
        work: out.join("work"),
        documents: out.join("documents"),
        stats: out.join("stats"),
        checkpoints: Some(out.join("checkpoints")),
        resume_from: resume_from.map(Path::to_path_buf),
    };
    pipeline::run(config, &paths, report)
}

/// Every document of the output shards, as parsed JSON, in order.
pub fn kept_docs(dir: &Path) -> Vec<serde_json::Value> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("documents folder")
        .map(|e| e.expect("entry").path())
        .collect();
    shards.sort();
    let mut out = Vec::new();
    for shard in shards {
        let r = std::io::BufReader::new(
            zstd::Decoder::new(std::fs::File::open(&shard).expect("shard")).expect("zstd"),
        );
        for line in r.lines() {
            out.push(serde_json::from_str(&line.expect("line")).expect("json"));
        }
    }
    out
}

pub fn kept_ids(dir: &Path) -> BTreeSet<String> {
    kept_docs(dir)
        .into_iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}
