//! The data side end to end on the real GermanDPR instruction set (2,050 conversations): read,
//! mix with a held-out split, encode, pack; every packed row is checked against the encodings
//! it was made from.

mod support;

use leo_plugin_sft::{
    encode, mix, pack, read_dataset, DataParams, Encoded, MixInput, OnMalformed, IGNORE_INDEX,
};
use serde_json::json;

#[test]
fn germandpr_read_mixed_encoded_and_packed() {
    let Some(shared) = support::shared_data() else {
        return;
    };
    let params = DataParams::from_params(&json!({
        "datasets": [{"input": "germandpr", "weight": 1.5}],
        "loss_on": "assistant",
        "seq_len": 2048,
        "seed": 5,
    }))
    .expect("params");
    let d = &params.datasets[0];
    let data = read_dataset(
        &shared.join("demo/sft/germandpr-instruct.jsonl"),
        d.format,
        params.on_malformed,
    )
    .expect("read");
    assert_eq!(params.on_malformed, OnMalformed::Skip);
    assert_eq!((data.conversations.len(), data.malformed), (2050, 0));

    let m = mix(
        &[MixInput {
            name: &d.input,
            weight: d.weight,
            conversations: &data.conversations,
        }],
        params.validation_fraction,
        params.seed,
    )
    .expect("mix");
    let held = m.validation.len();
    assert!(
        (8..=40).contains(&held),
        "about 1% of 2050 held out: {held}"
    );
    let train = 2050 - held;
    assert_eq!(m.train.len(), train + (train as f64 * 0.5).round() as usize);

    let tok = support::chat_tokenizer(&shared);
    let format = params.chat_format();
    let encoded: Vec<Encoded> = m
        .train
        .iter()
        .map(|p| {
            encode(
                &data.conversations[p.conversation],
                &tok,
                &format,
                params.loss_on,
            )
        })
        .collect::<anyhow::Result<_>>()
        .expect("encode");
    let pad = tok.token_to_id("<unk>").expect("a pad id");
    let packed = pack(&encoded, params.seq_len, pad).expect("pack");
    let s = packed.stats;
    eprintln!(
        "held out {held}, {} samples, {total_tokens} tokens: {s:?}",
        encoded.len(),
        total_tokens = encoded.iter().map(|e| e.ids.len()).sum::<usize>()
    );
    assert_eq!(s.conversations as usize, encoded.len());
    assert_eq!(
        s.truncated, 0,
        "GermanDPR conversations are shorter than 2048 tokens"
    );
    assert_eq!(
        s.trained_tokens as usize,
        encoded.iter().map(Encoded::trained).sum::<usize>()
    );
    let total: usize = encoded.iter().map(|e| e.ids.len()).sum();
    assert_eq!(
        s.rows as usize * params.seq_len,
        total + s.pad_tokens as usize
    );
    assert!(
        s.pad_tokens < s.rows * 1024,
        "rows are mostly filled: {s:?}"
    );

    // Rows hold the encodings in order, whole, each a document of its own, then padding.
    let mut next = encoded.iter();
    for row in &packed.rows {
        assert_eq!(row.ids.len(), params.seq_len);
        assert_eq!(row.labels.len(), params.seq_len);
        assert_eq!(row.doc_ids.len(), params.seq_len);
        let mut at = 0;
        let mut doc = 0;
        while at < params.seq_len && row.doc_ids[at] == doc && row.ids[at] == 1 {
            let e = next.next().expect("an encoding for every document");
            let end = at + e.ids.len();
            assert_eq!(row.ids[at..end], e.ids[..]);
            assert_eq!(row.labels[at..end], e.labels[..]);
            assert!(row.doc_ids[at..end].iter().all(|&x| x == doc));
            at = end;
            doc += 1;
        }
        assert!(row.ids[at..].iter().all(|&i| i == pad));
        assert!(row.labels[at..].iter().all(|&l| l == IGNORE_INDEX));
        assert!(row.doc_ids[at..].iter().all(|&x| x == doc));
    }
    assert!(next.next().is_none(), "every encoding was packed");
}
