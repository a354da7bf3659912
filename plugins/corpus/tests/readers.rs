//! Reading every input layout the stage promises, and reporting malformed records with file
//! and line instead of dropping them silently; exact dedup removes exactly the repeats.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use leo_plugin_corpus::config::{Config, OnMalformed};
use leo_plugin_corpus::pipeline;
use serde_json::json;
use support::{kept_docs, reading_only, run_on, shared_data, Recorder};

/// An OSCAR 23.01 record as the OSCAR documentation describes it.
fn oscar_2301(
    id: &str,
    text: &str,
    warnings: serde_json::Value,
    categories: serde_json::Value,
) -> String {
    json!({
        "content": text,
        "warc_headers": {
            "warc-record-id": format!("<urn:uuid:{id}>"),
            "warc-date": "2023-01-30T11:47:01Z",
            "warc-type": "conversion",
            "content-length": text.len().to_string(),
            "warc-target-uri": format!("https://example.de/{id}"),
            "warc-identified-content-language": "deu",
        },
        "metadata": {
            "identification": {"label": "de", "prob": 0.9912},
            "harmful_pp": 4567.8,
            "tlsh": "tlsh:T1A5F0...",
            "quality_warnings": warnings,
            "categories": categories,
            "sentence_identifications": [{"label": "de", "prob": 0.99}, null],
        }
    })
    .to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write fixture");
}

fn zstd_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, zstd::encode_all(bytes, 3).expect("zstd")).expect("write");
}

fn gzip_file(path: &Path, text: &str) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).expect("gzip");
    std::fs::write(path, enc.finish().expect("gzip")).expect("write");
}

#[test]
fn oscar_2301_and_2201_records_are_read_and_malformed_lines_reported() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("oscar");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    let good = [
        oscar_2301(
            "a1",
            "Erste Zeile.\nZweite Zeile.",
            json!(null),
            json!(null),
        ),
        oscar_2301(
            "a2",
            "Nur eine Zeile",
            json!(["tiny", "short_sentences"]),
            json!(["news"]),
        ),
    ];
    // Line 2 is cut off, line 4 has no content, line 5 is not an object.
    let text = format!(
        "{}\n{{\"content\": \"abgeschnitten\n{}\n{{\"warc_headers\": {{}}, \"metadata\": {{}}, \"text\": 1}}\n[1, 2]\n",
        good[0], good[1]
    );
    // Line 6 is not UTF-8.
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"{\"content\": \"ung\xfcltig\"}\n");
    zstd_file(&dir.join("part-1.jsonl.zst"), &bytes);
    gzip_file(
        &dir.join("sub/part-2.jsonl.gz"),
        &(good[0].replace("a1", "b1") + "\n"),
    );
    let oscar_2201 = shared_data().join("oscar/oscar-io-2201-sample.jsonl");
    let rec = Recorder::default();
    let stats = run_on(
        &reading_only(),
        vec![("oscar".into(), dir.clone()), ("old".into(), oscar_2201)],
        &tmp.path().join("out"),
        None,
        &rec,
    );
    assert_eq!(stats.documents_in, 6);
    assert_eq!(stats.malformed, 4);
    let examples = stats.malformed_examples.join("\n");
    for want in [
        "oscar/part-1.jsonl.zst:2: invalid JSON",
        "oscar/part-1.jsonl.zst:4: no `content` field",
        "oscar/part-1.jsonl.zst:5: the record is not a JSON object",
        "oscar/part-1.jsonl.zst:6: invalid UTF-8 at byte 16",
    ] {
        assert!(examples.contains(want), "missing `{want}` in:\n{examples}");
    }
    assert_eq!(
        rec.logs.lock().unwrap().len(),
        4,
        "each malformed record is logged"
    );

    let docs = kept_docs(&tmp.path().join("out/documents"));
    let ids: Vec<&str> = docs.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..3], &["urn:uuid:a1", "urn:uuid:a2", "urn:uuid:b1"]);
    assert_eq!(docs[0]["text"], "Erste Zeile.\nZweite Zeile.");
    assert_eq!(
        docs[0]["source"],
        json!({"file": "oscar/part-1.jsonl.zst", "line": 1})
    );
    assert_eq!(
        docs[1]["meta"]["quality_warnings"],
        json!(["tiny", "short_sentences"])
    );
    assert_eq!(
        docs[1]["meta"]["warc_headers"]["warc-target-uri"],
        "https://example.de/a2"
    );
    assert_eq!(docs[2]["source"]["file"], "oscar/sub/part-2.jsonl.gz");
    // OSCAR 22.01: annotations become quality warnings.
    assert_eq!(
        docs[3]["id"],
        "urn:uuid:5b7b838b-5205-4ce6-b42b-bd7eded72cd6"
    );
    assert_eq!(docs[3]["meta"]["quality_warnings"], json!(["tiny"]));
    assert_eq!(docs[3]["meta"]["identification"]["label"], "zh");

    // The OSCAR filters act on those annotations; the language filter on identification.
    let mut c = reading_only();
    c.filters.oscar.enabled = true;
    c.filters.oscar.quality_warnings = vec!["tiny".into()];
    c.filters.language.enabled = true;
    let stats = run_on(
        &c,
        vec![
            ("oscar".into(), dir.clone()),
            (
                "old".into(),
                shared_data().join("oscar/oscar-io-2201-sample.jsonl"),
            ),
        ],
        &tmp.path().join("out2"),
        None,
        &Recorder::default(),
    );
    assert_eq!(
        stats.filters[0].1.documents, 3,
        "the three Chinese documents"
    );
    assert_eq!(stats.filters[1].1.documents, 1, "a2 carries `tiny`");
    assert_eq!(stats.documents_out, 2);

    // on_malformed = "fail" stops at the first one, naming it.
    let c = Config {
        on_malformed: OnMalformed::Fail,
        ..reading_only()
    };
    let paths = pipeline::Paths {
        inputs: vec![("oscar".into(), dir)],
        language_model: None,
        work: tmp.path().join("out3/work"),
        documents: tmp.path().join("out3/documents"),
        stats: tmp.path().join("out3/stats"),
        checkpoints: None,
        resume_from: None,
    };
    let err = pipeline::run(&c, &paths, &Recorder::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("oscar/part-1.jsonl.zst:2: invalid JSON"),
        "{err:#}"
    );
}

#[test]
fn hf_plain_text_and_parquet_inputs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write(
        &dir.join("hf.jsonl"),
        &(json!({"text": "HF Text", "meta": {"warc_headers": {"warc-record-id": "<urn:uuid:hf1>"}, "harmful_pp": 12.0}}).to_string() + "\n"),
    );
    write(
        &dir.join("book.txt"),
        "Absatz eins.\n\nAbsatz zwei,\nzweite Zeile.\n",
    );
    let parquet = dir.join("rows.parquet");
    let python = std::env::var_os("LEO_DATATROVE_PYTHON")
        .expect("LEO_DATATROVE_PYTHON is not set: run the tests with `just test`");
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import sys, pyarrow as pa, pyarrow.parquet as pq; \
             pq.write_table(pa.table({'id': ['p1', 'p2'], 'text': ['Zeile eins', 'Zeile zwei'], 'url': ['u1', 'u2']}), sys.argv[1])",
        )
        .arg(&parquet)
        .status()
        .expect("pyarrow");
    assert!(status.success());
    let mut c = reading_only();
    c.text_unit = leo_plugin_corpus::config::TextUnit::Paragraph;
    let stats = run_on(
        &c,
        vec![("in".into(), dir)],
        &tmp.path().join("out"),
        None,
        &Recorder::default(),
    );
    assert_eq!(stats.malformed, 0);
    let docs = kept_docs(&tmp.path().join("out/documents"));
    let got: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("in/book.txt:1".to_string(), "Absatz eins.".to_string()),
            (
                "in/book.txt:3".to_string(),
                "Absatz zwei,\nzweite Zeile.".to_string()
            ),
            ("urn:uuid:hf1".to_string(), "HF Text".to_string()),
            ("p1".to_string(), "Zeile eins".to_string()),
            ("p2".to_string(), "Zeile zwei".to_string()),
        ]
    );
    assert_eq!(docs[2]["meta"]["harmful_pp"], 12.0);
    assert_eq!(docs[3]["meta"]["url"], "u1");
}

#[test]
fn exact_dedup_removes_exactly_the_repeated_normalised_texts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = reading_only();
    c.normalize = Default::default();
    c.dedup.exact.enabled = true;
    let out = tmp.path().join("out");
    let corpus: PathBuf = support::corpus();
    let stats = run_on(
        &c,
        vec![("corpus".into(), corpus.clone())],
        &out,
        None,
        &Recorder::default(),
    );

    // The expectation, computed independently: the first of each normalised text survives.
    let raw = std::io::BufRead::lines(std::io::BufReader::new(
        zstd::Decoder::new(std::fs::File::open(&corpus).unwrap()).unwrap(),
    ));
    let mut seen = HashSet::new();
    let mut want = Vec::new();
    for line in raw {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let text = leo_plugin_corpus::normalize::normalize(
            &c.normalize,
            v["text"].as_str().unwrap().to_string(),
        );
        if seen.insert(text) {
            want.push(v["id"].as_str().unwrap().to_string());
        }
    }
    let got: Vec<String> = kept_docs(&out.join("documents"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        stats.exact_dedup.documents > 500,
        "the corpus has natural duplicates"
    );
    assert_eq!(stats.exact_dedup.documents as usize, 26_048 - want.len());
    assert_eq!(got, want);
}
