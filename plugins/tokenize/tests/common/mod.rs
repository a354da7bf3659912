//! Shared by the tokenize plugin's tests: the shared corpus, the Llama-2 tokenizer, Python.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};

/// ../shared/data; the tests fail, not skip, without it.
pub fn shared_data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        llama2(&root).exists() && corpus(&root).exists(),
        "these tests need ../shared/data (llama2-tokenizer, corpus-de) beside the repository"
    );
    root
}

fn llama2(root: &Path) -> PathBuf {
    root.join("llama2-tokenizer/tokenizer.json")
}

fn corpus(root: &Path) -> PathBuf {
    root.join("corpus-de/debian-docs-de.jsonl.zst")
}

pub fn llama2_tokenizer() -> PathBuf {
    llama2(&shared_data())
}

pub fn corpus_file() -> PathBuf {
    corpus(&shared_data())
}

/// The corpus's JSONL lines (all, or the first `limit`).
pub fn corpus_lines(limit: Option<usize>) -> Vec<String> {
    let file = std::fs::File::open(corpus_file()).expect("corpus");
    let reader = std::io::BufReader::new(zstd::Decoder::new(file).expect("zstd"));
    reader
        .lines()
        .take(limit.unwrap_or(usize::MAX))
        .map(|l| l.expect("line"))
        .collect()
}

pub fn text_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line).expect("json")["text"]
        .as_str()
        .expect("text")
        .to_string()
}

/// The venv Python `just test` sets up (tokenizers 0.23.3, megatron-core).
pub fn python() -> std::ffi::OsString {
    std::env::var_os("LEO_TORCH_PYTHON").expect(
        "LEO_TORCH_PYTHON is not set: run the tests with `just test` (it sets up the Python venv)",
    )
}

/// Runs a script of this folder with the venv Python; its stdout as JSON.
pub fn run_python<T: serde::de::DeserializeOwned>(script: &str, args: &[&Path]) -> T {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}
