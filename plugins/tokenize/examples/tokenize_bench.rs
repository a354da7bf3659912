//! leo's side of `just bench tokenize` (bench/tokenize.py): encodes the shared German corpus
//! through the tokenize plugin's own encode path (default params: BOS/EOS, long documents in
//! pieces) on all cores, then runs the whole plugin (`Plugin::run`: read, encode, split,
//! shuffle, write shards) on it, and prints one JSON line last: documents, tokens, seconds,
//! run_seconds, a SHA-256 of the text ids (without BOS/EOS) so the bench can check Python
//! produced the same ids.
//!
//! `tokenize_bench [--corpus F.jsonl.zst] [--tokenizer tokenizer.json] [--chunk-chars N]
//!  [--no-word-split] [--export-jsonl OUT]` (`--export-jsonl` writes the decompressed corpus for Python and exits).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use leo_plugin::{Emitter, InputArtifact, Invocation, Plugin, PROTOCOL_VERSION};
use leo_plugin_tokenize::{encoder, input, load_tokenizer, Params, Tokenize};
use sha2::{Digest, Sha256};

fn main() -> Result<()> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let mut corpus = data.join("corpus-de/debian-docs-de.jsonl.zst");
    let mut tokenizer = data.join("llama2-tokenizer/tokenizer.json");
    let mut params = serde_json::json!({});
    let mut export = None;
    let mut word_split = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--corpus" => corpus = value()?.into(),
            "--tokenizer" => tokenizer = value()?.into(),
            "--chunk-chars" => params["chunk_chars"] = value()?.parse::<u64>()?.into(),
            "--export-jsonl" => export = Some(PathBuf::from(value()?)),
            "--no-word-split" => word_split = false,
            other => bail!("unknown argument {other}"),
        }
    }
    let lines: Vec<String> = input::open(&corpus)?
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", corpus.display()))?;
    if let Some(path) = export {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for l in &lines {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
        return Ok(());
    }
    let texts: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().context("no text")?.to_string())
        })
        .collect::<Result<_>>()?;
    let params_json = params.clone();
    let params = Params::parse(&params).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tok, _) = load_tokenizer(&tokenizer)?;
    let mut enc = encoder(&params, tok)?;
    if !word_split {
        enc = enc.without_word_split();
    }

    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let ids = enc.encode_batch(&texts)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;

    // The whole stage, as `leo worker tokenize` runs it (its events go to stdout first).
    let tmp = tempfile::tempdir()?;
    let input = |p: &std::path::Path| InputArtifact {
        digest: "sha256:bench".into(),
        path: p.to_path_buf(),
    };
    let inv = Invocation {
        protocol: PROTOCOL_VERSION,
        run_id: "bench".into(),
        stage: "tokenize".into(),
        attempt: 1,
        plugin: "tokenize".into(),
        params: params_json,
        inputs: [
            ("documents".to_string(), input(&corpus)),
            ("tokenizer".to_string(), input(&tokenizer)),
        ]
        .into(),
        outputs: vec!["tokens".into()],
        output_dir: tmp.path().into(),
        checkpoint_dir: tmp.path().join("checkpoints"),
        resume_from: None,
        work_dir: tmp.path().into(),
        rank: 0,
        world_size: 1,
        rendezvous: None,
        run_context: None,
    };
    let start = Instant::now();
    Tokenize.run(&inv, &Emitter::new())?;
    let run_seconds = start.elapsed().as_secs_f64();

    let mut sha = Sha256::new();
    let mut tokens = 0;
    for doc in &ids {
        // Without BOS and EOS: Python encodes the text alone.
        let text = &doc[1..doc.len() - 1];
        tokens += text.len();
        for id in text {
            sha.update(id.to_le_bytes());
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "documents": texts.len(),
            "tokens": tokens,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "run_seconds": run_seconds,
            "threads": rayon::current_num_threads(),
            "chunking": format!("{:?}", enc.chunking()),
            "word_split": enc.word_split().map(String::from),
            "ids_sha256": hex::encode(sha.finalize()),
        })
    );
    Ok(())
}

/// User + system CPU time of this process so far: on a shared machine it varies less than
/// wall time.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
