//! The plugin's encode path (default params: BOS, EOS, long documents in pieces) gives the
//! Python `tokenizers` library's ids on the first 2,000 documents of ../shared/data/corpus-de.

mod common;

use leo_plugin_tokenize::{encode::Chunking, encoder, load_tokenizer, Params};

const DOCS: usize = 2000;

#[test]
fn ids_equal_python_tokenizers_with_bos_and_eos() {
    let lines = common::corpus_lines(Some(DOCS));
    assert_eq!(lines.len(), DOCS);
    let texts: Vec<String> = lines.iter().map(|l| common::text_of(l)).collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    let docs_path = tmp.path().join("docs.jsonl");
    std::fs::write(&docs_path, lines.join("\n") + "\n").expect("write docs");

    #[derive(serde::Deserialize)]
    struct Reference {
        bos: u32,
        eos: u32,
        ids: Vec<Vec<u32>>,
    }
    let tokenizer_json = common::llama2_tokenizer();
    let want: Reference = common::run_python(
        "tokenize_reference.py",
        &[tokenizer_json.as_path(), docs_path.as_path()],
    );
    assert_eq!((want.bos, want.eos), (1, 2));

    let params = Params::parse(&serde_json::json!({})).expect("default params");
    let (tok, _) = load_tokenizer(&tokenizer_json).expect("tokenizer");
    let enc = encoder(&params, tok).expect("encoder");
    assert_eq!(enc.chunking(), &Chunking::On(4096));
    let got = enc.encode_batch(&texts).expect("encode");
    assert_eq!(got.len(), DOCS);
    let (mut tokens, mut cut) = (0, 0);
    for (i, (g, w)) in got.iter().zip(&want.ids).enumerate() {
        assert_eq!(g.first(), Some(&1), "document {i}: BOS first");
        assert_eq!(g.last(), Some(&2), "document {i}: EOS last");
        assert_eq!(g, w, "document {i} encodes differently from Python");
        tokens += g.len();
        cut += usize::from(enc.pieces(&texts[i]).len() > 1);
    }
    assert!(
        tokens > 100_000,
        "only {tokens} tokens: the comparison would say little"
    );
    assert!(cut > 10, "only {cut} documents were cut into pieces");
}
