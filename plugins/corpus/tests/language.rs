//! leo computes fastText's input ids itself (`fasttext_ids`) and leaves only the arithmetic to
//! the C++ library: the scores must equal fastText's own `predict` on a line, for every
//! document of the shared corpus.

mod support;

use std::io::BufRead;

use leo_plugin_corpus::fasttext_ids::Dictionary;

#[test]
fn our_token_ids_give_fasttexts_own_predictions() {
    let model_path = std::path::PathBuf::from(
        std::env::var_os("LEO_LID176_MODEL").expect("LEO_LID176_MODEL is not set: run `just test`"),
    );
    let mut model = fasttext::FastText::new();
    model
        .load_model(&model_path.to_string_lossy())
        .expect("model");
    let dictionary = Dictionary::load(&model_path).expect("dictionary");
    let file = std::fs::File::open(support::corpus()).expect("corpus");
    let reader = std::io::BufReader::new(zstd::Decoder::new(file).expect("zstd"));
    let mut checked = 0;
    for line in reader.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.expect("line")).expect("json");
        let text = v["text"].as_str().expect("text").replace(['\n', '\0'], " ");
        let theirs = model
            .predict(&format!("{text}\n"), -1, 0.0)
            .expect("predict");
        let ours = model
            .predict_on_words(&dictionary.line_ids(&text), -1, 0.0)
            .expect("predict_on_words");
        let pairs = |p: Vec<fasttext::Prediction>| -> Vec<(String, f32)> {
            p.into_iter().map(|p| (p.label, p.prob)).collect()
        };
        assert_eq!(pairs(ours), pairs(theirs), "document {}", v["id"]);
        checked += 1;
    }
    assert_eq!(checked, 26_048);
}
