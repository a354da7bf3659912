//! The plugin end to end through `Plugin::run`: 2,000 documents of ../shared/data/corpus-de
//! (zstd and gzip files, one malformed line, one empty text) to train/validation shards that
//! leo's reader and Megatron's own reader (megatron-core) read back as the same ids and
//! document boundaries, in the seed's shuffled order; byte-identical on 1 and 2 threads.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use leo_indexed::IndexedDataset;
use leo_plugin::{Emitter, InputArtifact, Invocation, Plugin, PROTOCOL_VERSION};
use leo_plugin_tokenize::{encoder, load_tokenizer, shuffle, Params, Tokenize};
use serde_json::{json, Value};

const DOCS: usize = 2000;

fn invocation(dir: &Path, documents: &Path, tokenizer: &Path, params: Value) -> Invocation {
    let input = |p: &Path| InputArtifact {
        digest: "sha256:test".into(),
        path: p.to_path_buf(),
    };
    for d in ["out", "work", "checkpoints"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    Invocation {
        protocol: PROTOCOL_VERSION,
        run_id: "test".into(),
        stage: "tokenize".into(),
        attempt: 1,
        plugin: "tokenize".into(),
        params,
        inputs: BTreeMap::from([
            ("documents".to_string(), input(documents)),
            ("tokenizer".to_string(), input(tokenizer)),
        ]),
        outputs: vec!["tokens".into()],
        output_dir: dir.join("out"),
        checkpoint_dir: dir.join("checkpoints"),
        resume_from: None,
        work_dir: dir.join("work"),
        rank: 0,
        world_size: 1,
        rendezvous: None,
        run_context: None,
    }
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct MegatronShard {
    name: String,
    dtype: String,
    document_indices: Vec<u64>,
    sequences: Vec<Vec<u32>>,
}

#[test]
fn shards_read_back_with_leo_and_megatron_and_are_deterministic() {
    let lines = common::corpus_lines(Some(DOCS));
    let tmp = tempfile::tempdir().expect("temp dir");
    // Input: a folder with a zstd file and a gzip file (a malformed line, an empty text and a
    // document without id in the second).
    let docs_dir = tmp.path().join("docs");
    std::fs::create_dir_all(&docs_dir).expect("mkdir");
    let (first, second) = lines.split_at(DOCS / 2);
    let zst = zstd::encode_all((first.join("\n") + "\n").as_bytes(), 3).expect("zstd");
    std::fs::write(docs_dir.join("a.jsonl.zst"), zst).expect("write");
    let mut rest: Vec<String> = second.to_vec();
    rest.insert(3, "{\"id\": \"broken\", \"text\": ".into());
    rest.insert(5, "{\"id\": \"empty\", \"text\": \"\"}".into());
    rest.push("{\"text\": \"Ein Dokument ohne Kennung.\"}".into());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all((rest.join("\n") + "\n").as_bytes())
        .expect("gzip");
    std::fs::write(docs_dir.join("b.jsonl.gz"), gz.finish().expect("gzip")).expect("write");
    let tokenizer_dir = common::llama2_tokenizer()
        .parent()
        .expect("folder")
        .to_path_buf();

    let params = json!({"validation_fraction": 0.1, "seed": 7, "shard_tokens": 200_000});
    let run_in = |dir: &Path, threads: usize| -> PathBuf {
        let inv = invocation(dir, &docs_dir, &tokenizer_dir, params.clone());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| Tokenize.run(&inv, &Emitter::new()))
            .expect("run");
        assert!(
            !dir.join("work/tokenize-spill").exists(),
            "spill left behind"
        );
        dir.join("out/tokens")
    };
    let out = run_in(&tmp.path().join("run2"), 2);

    // What the shards must hold: every good document, BOS + ids + EOS, split by the seed's
    // hash of its id and sorted by the shuffle key.
    let mut docs: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            (
                v["id"].as_str().expect("id").to_string(),
                common::text_of(l),
            )
        })
        .collect();
    docs.push((
        "b.jsonl.gz:1003".into(),
        "Ein Dokument ohne Kennung.".into(),
    ));
    let p = Params::parse(&params).expect("params");
    let (tok, sha) = load_tokenizer(&common::llama2_tokenizer()).expect("tokenizer");
    let texts: Vec<&str> = docs.iter().map(|d| d.1.as_str()).collect();
    let ids = encoder(&p, tok)
        .expect("encoder")
        .encode_batch(&texts)
        .expect("encode");
    let mut want: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    for (pos, (id, _)) in docs.iter().enumerate() {
        let (split, key) = shuffle::keys(7, id);
        let name = if shuffle::is_validation(split, 0.1) {
            "validation"
        } else {
            "train"
        };
        want.entry(name).or_default().push((key, pos));
    }

    let meta: Value =
        serde_json::from_slice(&std::fs::read(out.join("meta.json")).expect("meta")).expect("json");
    assert_eq!(meta["documents"], DOCS + 1);
    assert_eq!(
        (
            meta["malformed_lines"].clone(),
            meta["empty_documents"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        meta["tokenizer"],
        json!({"sha256": sha, "vocab_size": 32000})
    );
    assert_eq!(
        (
            meta["dtype"].clone(),
            meta["bos_id"].clone(),
            meta["eos_id"].clone()
        ),
        (json!("uint16"), json!(1), json!(2))
    );
    assert_eq!(meta["params"]["validation_fraction"], 0.1);

    let megatron: BTreeMap<String, Vec<MegatronShard>> =
        common::run_python("megatron_read.py", &[out.as_path()]);
    for split in ["train", "validation"] {
        let mut order = want[split].clone();
        order.sort();
        let expected: Vec<&Vec<u32>> = order.iter().map(|&(_, pos)| &ids[pos]).collect();
        let mut got_leo: Vec<Vec<u32>> = Vec::new();
        let shards = meta[split]["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), megatron[split].len());
        assert!(
            split == "validation" || shards.len() > 3,
            "{} train shards",
            shards.len()
        );
        for (s, mega) in shards.iter().zip(&megatron[split]) {
            let name = s["name"].as_str().expect("name");
            assert_eq!(mega.name, name);
            assert_eq!(mega.dtype, "uint16");
            let ds = IndexedDataset::open(out.join(split).join(name)).expect("open shard");
            assert!(ds.tokens() <= 200_000 || ds.documents() == 1);
            assert_eq!(ds.documents() as u64, s["documents"].as_u64().expect("n"));
            let seqs: Vec<Vec<u32>> = (0..ds.len())
                .map(|i| ds.get(i).expect("seq").to_vec())
                .collect();
            assert_eq!(
                seqs, mega.sequences,
                "{split}/{name}: leo and Megatron read different ids"
            );
            let bounds: Vec<u64> = ds.document_indices().map(|d| d as u64).collect();
            assert_eq!(
                bounds, mega.document_indices,
                "{split}/{name}: document boundaries"
            );
            assert_eq!(bounds, (0..=ds.len() as u64).collect::<Vec<_>>());
            got_leo.extend(seqs);
        }
        assert_eq!(got_leo.len(), expected.len(), "{split}: document count");
        for (i, (g, w)) in got_leo.iter().zip(&expected).enumerate() {
            assert_eq!(g, *w, "{split}: document {i} of the shuffled order");
        }
        assert_eq!(meta[split]["documents"], expected.len());
    }
    assert!(meta["validation"]["documents"].as_u64().expect("n") > 150);

    // One thread gives the same bytes.
    let out1 = run_in(&tmp.path().join("run1"), 1);
    let (a, b) = (tree(&out), tree(&out1));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{} differs between 2 threads and 1",
            k.display()
        );
    }
}

#[test]
fn on_malformed_fail_names_the_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"a\", \"text\": \"Hallo\"}\n{\"id\": \"b\", \"text\" 1}\n",
    )
    .expect("write");
    let inv = invocation(
        tmp.path(),
        &docs,
        &common::llama2_tokenizer(),
        json!({"on_malformed": "fail"}),
    );
    let err = format!(
        "{:#}",
        Tokenize.run(&inv, &Emitter::new()).expect_err("must fail")
    );
    assert!(err.contains("docs.jsonl:2: not JSON"), "{err}");
    // Skipping (the default) goes on.
    let inv = invocation(tmp.path(), &docs, &common::llama2_tokenizer(), json!({}));
    Tokenize.run(&inv, &Emitter::new()).expect("run");
}
