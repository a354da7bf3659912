//! Runs the corpus stage's pipeline outside the engine (leo's side of `just bench corpus`):
//!
//!     corpus_run PARAMS.json OUT_DIR INPUT... [--language-model MODEL]
//!
//! Prints the statistics as JSON on stdout.
use std::path::PathBuf;

use anyhow::{Context, Result};
use leo_plugin_corpus::{pipeline, summary, Config};

struct Quiet;
impl pipeline::Report for Quiet {
    fn progress(&self, _docs: u64, _bytes: u64) {}
    fn log(&self, message: &str) {
        eprintln!("{message}");
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut language_model = None;
    if let Some(i) = args.iter().position(|a| a == "--language-model") {
        language_model = Some(PathBuf::from(
            args.get(i + 1).context("--language-model needs a path")?,
        ));
        args.drain(i..i + 2);
    }
    anyhow::ensure!(
        args.len() >= 3,
        "usage: corpus_run PARAMS.json OUT_DIR INPUT... [--language-model MODEL]"
    );
    let params: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&args[0]).context("reading params")?)?;
    let config = Config::from_params(&params).map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = PathBuf::from(&args[1]);
    let inputs = args[2..]
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("input{i}"), PathBuf::from(p)))
        .collect();
    let paths = pipeline::Paths {
        inputs,
        language_model,
        work: out.join("work"),
        documents: out.join("documents"),
        stats: out.join("stats"),
        checkpoints: None,
        resume_from: None,
    };
    let stats = pipeline::run(&config, &paths, &Quiet)?;
    eprint!("{}", summary::render(&stats));
    println!("{}", summary::to_json(&stats, &config));
    Ok(())
}
