//! The Llama-2 tokenizer encodes real German documents exactly as the Python `tokenizers`
//! library does (2,000 documents of ../shared/data/corpus-de).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use leo_llama::Tokenizer;

const DOCS: usize = 2000;

fn shared_data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        root.join("llama2-tokenizer/tokenizer.json").exists()
            && root.join("corpus-de/debian-docs-de.jsonl.zst").exists(),
        "this test needs ../shared/data (llama2-tokenizer, corpus-de) beside the repository"
    );
    root
}

#[test]
fn llama2_tokenizer_matches_python_tokenizers_on_german_documents() {
    let data = shared_data();
    let tokenizer_json = data.join("llama2-tokenizer/tokenizer.json");
    let file =
        std::fs::File::open(data.join("corpus-de/debian-docs-de.jsonl.zst")).expect("corpus");
    let reader = std::io::BufReader::new(zstd::Decoder::new(file).expect("zstd"));
    let lines: Vec<String> = reader
        .lines()
        .take(DOCS)
        .map(|l| l.expect("line"))
        .collect();
    assert_eq!(lines.len(), DOCS);
    let texts: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();

    let tmp = tempfile::tempdir().expect("temp dir");
    let docs_path = tmp.path().join("docs.jsonl");
    std::fs::write(&docs_path, lines.join("\n") + "\n").expect("write docs");
    let python = std::env::var_os("LEO_TORCH_PYTHON").expect(
        "LEO_TORCH_PYTHON is not set: run the tests with `just test` (it sets up the Python venv)",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenize_reference.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(&tokenizer_json)
        .arg(&docs_path)
        .output()
        .expect("run tokenize_reference.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).expect("ids json");

    let tok = Tokenizer::from_file(&tokenizer_json).expect("tokenizer");
    assert_eq!(tok.vocab_size(), 32000);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = tok.encode_batch(&refs, true).expect("encode");
    let mut tokens = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "document {i} encodes differently");
        tokens += g.len();
    }
    assert!(
        tokens > 100_000,
        "only {tokens} tokens: the comparison would say little"
    );
    assert_eq!(got[0][0], 1, "Llama-2 puts BOS first");
    // Decoding gives the text back (the Llama-2 normaliser adds only the leading space).
    let back = tok.decode(&got[1], true).expect("decode");
    assert_eq!(back.trim_start(), texts[1].trim_start());
}

#[test]
fn chatml_tokens_are_added_as_python_tokenizers_adds_them() {
    let data = shared_data();
    let tokenizer_json = data.join("llama2-tokenizer/tokenizer.json");
    let mut tok = Tokenizer::from_file(&tokenizer_json).expect("tokenizer");
    assert_eq!(tok.add_chatml_tokens().expect("add"), 2);
    assert_eq!(tok.vocab_size(), 32002);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(32000));
    let chat = "<|im_start|>system\nDies ist eine Unterhaltung.<|im_end|>\n<|im_start|>user\nWie heißt die Hauptstadt von Österreich?<|im_end|>\n<|im_start|>assistant\n";
    let got = tok.encode(chat, true).expect("encode");
    let python =
        std::env::var_os("LEO_TORCH_PYTHON").expect("LEO_TORCH_PYTHON: run with `just test`");
    let script = "import json, sys\nfrom tokenizers import Tokenizer\nt = Tokenizer.from_file(sys.argv[1])\n\
                  t.add_special_tokens(['<|im_start|>', '<|im_end|>'])\nprint(json.dumps(t.encode(sys.argv[2]).ids))";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&tokenizer_json)
        .arg(chat)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<u32> = serde_json::from_slice(&out.stdout).expect("ids");
    assert_eq!(got, want);
    assert_eq!(got.iter().filter(|&&i| i == 32000).count(), 3);
    // A saved tokenizer keeps them.
    let tmp = tempfile::tempdir().expect("temp dir");
    tok.save(&tmp.path().join("tokenizer.json")).expect("save");
    let again = Tokenizer::from_file(&tmp.path().join("tokenizer.json")).expect("reload");
    assert_eq!(again.encode(chat, true).expect("encode"), got);
}
