//! What the conformance tests need from outside the repository: ../shared/data and the Python
//! venv of tools/torch-env.sh. Missing, a test is skipped with a message on a workstation and
//! fails in CI (`CI=true`), where a skipped comparison would pass unnoticed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn missing<T>(what: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true and {what}");
    eprintln!("skipped: {what}");
    None
}

/// ../shared/data, when it holds the Llama-2 tokenizer and the GermanBench sample.
pub fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let needed = [
        "llama2-tokenizer/tokenizer.json",
        "germanbench-sample/arc_challenge_de/test.jsonl",
        "germanbench-sample/mmlu_de/dev.jsonl",
        "germanbench-sample/truthfulqa_de/validation.jsonl",
        "demo/de/germandpr-passages.txt",
    ];
    match needed.iter().find(|n| !root.join(n).is_file()) {
        None => Some(root),
        Some(n) => missing(&format!("{} lacks {n}", root.display())),
    }
}

/// The venv python with torch, transformers and lm-eval (`LEO_TORCH_PYTHON`).
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("LEO_TORCH_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => missing(
            "LEO_TORCH_PYTHON is not set or not a file: `eval \"$(tools/torch-env.sh)\"` or run `just test`",
        ),
    }
}
