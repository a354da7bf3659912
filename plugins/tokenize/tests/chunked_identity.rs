//! Encoding long documents in pieces, and pieces in words, gives exactly the ids of the
//! library's whole-document encoding, on every document of ../shared/data/corpus-de (26k German
//! documents, up to 850k characters): for the default piece size with words, a small piece size
//! that cuts nearly every line without words, and words alone.

mod common;

use leo_plugin_tokenize::encode::{Chunking, Encoder};
use leo_plugin_tokenize::load_tokenizer;
use rayon::prelude::*;

#[test]
fn pieces_encode_as_the_whole_document_on_the_whole_corpus() {
    let texts: Vec<String> = common::corpus_lines(None)
        .iter()
        .map(|l| common::text_of(l))
        .collect();
    assert!(texts.len() > 26_000, "{} documents", texts.len());
    let (tok, _) = load_tokenizer(&common::llama2_tokenizer()).expect("tokenizer");
    // The reference: the library's own encode of each document whole.
    let whole_enc = Encoder::new(tok.clone(), 0, None, None).expect("encoder");
    let whole: Vec<Vec<u32>> = texts
        .par_iter()
        .map(|t| whole_enc.encode_whole(t).expect("encode"))
        .collect();
    let tokens: usize = whole.iter().map(Vec::len).sum();
    assert!(tokens > 8_000_000, "{tokens} tokens");

    for (size, words) in [(4096, true), (256, false), (0, true)] {
        let mut enc = Encoder::new(tok.clone(), size, None, None).expect("encoder");
        if size > 0 {
            assert_eq!(enc.chunking(), &Chunking::On(size));
        }
        assert_eq!(
            enc.word_split(),
            Some('▁'),
            "Llama-2's words can be cut before ▁"
        );
        if !words {
            enc = enc.without_word_split();
        }
        let got = enc.encode_batch(&texts).expect("encode");
        let mut cut = 0;
        let mut pieces = 0;
        for (i, (g, w)) in got.iter().zip(&whole).enumerate() {
            let n = enc.pieces(&texts[i]).len();
            pieces += n;
            cut += usize::from(n > 1);
            assert!(
                g == w,
                "document {i} ({} bytes, {n} pieces of {size}, words {words}) encodes differently",
                texts[i].len()
            );
        }
        eprintln!("piece size {size}, words {words}: {cut} documents cut, {pieces} pieces");
        if size > 0 {
            assert!(cut > 900, "only {cut} documents were cut at {size} bytes");
        }
    }
    // The longest document (850k characters) was among those cut.
    let longest = texts.iter().map(String::len).max().unwrap_or(0);
    assert!(longest > 800_000, "longest document {longest} bytes");
}
