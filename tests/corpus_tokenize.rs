//! LeoLM's data path through `leo run`: real German documents → `corpus` (filters, exact and
//! MinHash dedup) → `tokenize` (Llama-2 tokenizer, Megatron shards). A rerun is served from
//! the cache, and a run killed in the middle of the corpus stage finishes with `leo resume`:
//! the corpus stage continues from its checkpoint, and the artifacts equal an uninterrupted
//! run's.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use leo_e2e::*;

/// The whole shared corpus: several input rounds, so the corpus stage checkpoints a few times.
const DOCS: usize = 26_048;

fn shared_data() -> PathBuf {
    let root = repo_root().join("../shared/data");
    assert!(
        root.join("corpus-de/debian-docs-de.jsonl.zst").exists()
            && root.join("llama2-tokenizer/tokenizer.json").exists(),
        "this test needs ../shared/data (corpus-de, llama2-tokenizer) beside the repository"
    );
    root
}

/// A workflow over the first `DOCS` documents of the shared corpus.
fn workflow(sb: &Sandbox) {
    let data = shared_data();
    let corpus =
        std::fs::File::open(data.join("corpus-de/debian-docs-de.jsonl.zst")).expect("corpus");
    let lines = std::io::BufReader::new(zstd::Decoder::new(corpus).expect("zstd")).lines();
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    for line in lines.take(DOCS) {
        writeln!(enc, "{}", line.expect("line")).expect("write");
    }
    sb.write("web/part-0.jsonl.zst", enc.finish().expect("zstd"));
    let tokenizer = data.join("llama2-tokenizer/tokenizer.json");
    sb.write(
        "data.toml",
        format!(
            r#"
[workflow]
name = "data"

[stages.corpus]
plugin = "corpus"
inputs = {{ web = "file://${{workflow.dir}}/web" }}
# No language model file here: whatlang identifies the language.
params.filters.language = {{ threshold = 0.5 }}
# A checkpoint after every round of input batches (about 7,000 documents).
params.checkpoint_docs = 1

[stages.tokenize]
plugin = "tokenize"
inputs = {{ documents = "corpus.documents", tokenizer = "file://{tokenizer}" }}
params = {{ validation_fraction = 0.05, seed = 7 }}
"#,
            tokenizer = tokenizer.display()
        ),
    );
}

fn digests(status: &serde_json::Value) -> (String, String) {
    (
        output_digest(status, "corpus", "documents"),
        output_digest(status, "tokenize", "tokens"),
    )
}

#[test]
fn corpus_then_tokenize_runs_caches_and_resumes() {
    let sb = Sandbox::new();
    workflow(&sb);
    sb.leo_ok(&["run", "data.toml"]);
    let first = sb.status(None);
    assert_eq!(first["run"]["status"], "succeeded", "{first}");

    // The stages did real work: documents were filtered and deduplicated, tokens written.
    let docs = sb.leo_ok(&["logs", "latest", "corpus"]);
    assert!(
        docs.contains(&format!("corpus: {DOCS} documents")),
        "{docs}"
    );
    assert!(docs.contains("minhash dedup"), "{docs}");
    let metrics = &stage(&first, "corpus")["metrics"];
    let kept = metrics["documents_out"]
        .as_f64()
        .expect("documents_out metric");
    assert!(
        kept > 100.0 && kept < DOCS as f64 * 0.9,
        "kept {kept} of {DOCS}: {metrics}"
    );
    let tokens = stage(&first, "tokenize")["metrics"]["tokens_train"]
        .as_f64()
        .expect("tokens_train metric");
    assert!(tokens > 100_000.0, "{tokens} tokens");

    // Nothing changed: the rerun executes nothing.
    sb.leo_ok(&["run", "data.toml"]);
    let second = sb.status(None);
    for s in ["corpus", "tokenize"] {
        assert_eq!(stage(&second, s)["status"], "cached", "{second}");
    }
    assert_eq!(digests(&second), digests(&first));

    // Killed while the corpus stage works: resume reruns it and then tokenizes, with the
    // same results as the uninterrupted run.
    let sb2 = Sandbox::new();
    workflow(&sb2);
    let mut leo = sb2.spawn(&["run", "data.toml"], "run");
    wait_until(
        "the corpus stage to start",
        Duration::from_secs(120),
        || {
            sb2.leo(&["status", "--json"]).status.success()
                && stage(&sb2.status(None), "corpus")["status"] == "running"
        },
    );
    sigkill(&mut leo);
    let run = sb2.latest_run();
    sb2.leo_ok(&["resume", &run]);
    let resumed = sb2.status(Some(&run));
    assert_eq!(resumed["run"]["status"], "succeeded", "{resumed}");
    assert_eq!(digests(&resumed), digests(&first));
}
