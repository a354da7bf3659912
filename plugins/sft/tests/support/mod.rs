//! What the conformance tests need from outside the repository: ../shared/data and the Python
//! venv of tools/torch-env.sh. Missing, a test is skipped with a message on a workstation and
//! fails in CI (`CI=true`), where a skipped comparison would pass unnoticed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use leo_llama::Tokenizer;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails in CI, else says why the test does nothing and returns `None`.
fn missing<T>(what: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true and {what}");
    eprintln!("skipped: {what}");
    None
}

/// ../shared/data, when it holds the Llama-2 tokenizer and the German SFT demo set.
pub fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if root.join("llama2-tokenizer/tokenizer.json").is_file()
        && root.join("demo/sft/germandpr-instruct.jsonl").is_file()
    {
        Some(root)
    } else {
        missing(&format!(
            "{} lacks llama2-tokenizer/tokenizer.json or demo/sft/germandpr-instruct.jsonl",
            root.display()
        ))
    }
}

/// The venv python with torch, transformers and tokenizers (`LEO_TORCH_PYTHON`).
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("LEO_TORCH_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => missing(
            "LEO_TORCH_PYTHON is not set or not a file: `eval \"$(tools/torch-env.sh)\"` or run `just test`",
        ),
    }
}

/// The Llama-2 tokenizer with ChatML's tokens added, as the SFT stage uses it.
pub fn chat_tokenizer(shared: &Path) -> Tokenizer {
    let mut tok = Tokenizer::from_file(&shared.join("llama2-tokenizer/tokenizer.json"))
        .expect("the Llama-2 tokenizer");
    assert_eq!(tok.add_chatml_tokens().expect("ChatML tokens"), 2);
    tok
}
