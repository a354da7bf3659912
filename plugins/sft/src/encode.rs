//! A conversation into token ids and training labels.
//!
//! The ids are exactly those of tokenizing the whole rendered ChatML text once, BOS first, as
//! the Llama tokenizer does with `add_special_tokens=true` and as a user's
//! `tokenizer(apply_chat_template(...))` does. Tokenizing messages one by one and
//! concatenating would give other ids: the Llama-2 `tokenizer.json` prepends `▁` to every
//! stretch of text between special tokens and merges across what would be piece boundaries,
//! so pieces tokenized alone differ from the same text in context. Which tokens are trained is
//! therefore decided afterwards, from each token's byte range in the rendered text.
//!
//! Labels are the ids where trained and [`IGNORE_INDEX`] elsewhere, unshifted (transformers'
//! convention: the loss scores the logits at `p` against the label at `p + 1`).
//!
//! - [`LossOn::All`] (what LeoLM's published runs did) trains every token but the BOS: system
//!   prompt, user turns, headers and newlines included.
//! - [`LossOn::Assistant`] trains each assistant message's content and its closing
//!   `<|im_end|>` (so the model learns to stop), not the `<|im_start|>assistant\n` header (the
//!   prompt supplies it at inference) nor the newline after `<|im_end|>` (generation stops at
//!   `<|im_end|>`; the newline is never generated).
//!
//! A token straddling the edge of a trained range (its bytes partly inside) is trained: it
//! carries content the model must learn to produce, and dropping it would silently remove
//! the first or last characters of an answer from the loss. With the Llama-2 tokenizer this
//! never happens: `<|im_end|>` is a special token, so nothing merges across the end of a
//! content, and no Llama-2 token contains a newline, so nothing merges across the header's
//! `\n`. The unit tests build a tokenizer where it does.

use anyhow::{bail, Result};
use leo_llama::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::chatml::{ChatFormat, IM_END, IM_START};
use crate::formats::{Conversation, Role};

/// The label of positions the loss ignores (transformers' and PyTorch's default).
pub const IGNORE_INDEX: i64 = -100;

/// Which tokens the loss is computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// Assistant contents and their closing `<|im_end|>`.
    Assistant,
    /// Every token except BOS.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// `ids[i]` as `i64` where trained, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

impl Encoded {
    /// How many tokens are trained.
    pub fn trained(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Tokenizes `conversation` rendered by `format` and labels it; `tokenizer` must know the
/// ChatML tokens ([`Tokenizer::add_chatml_tokens`]).
pub fn encode(
    conversation: &Conversation,
    tokenizer: &Tokenizer,
    format: &ChatFormat,
    loss_on: LossOn,
) -> Result<Encoded> {
    for token in [IM_START, IM_END] {
        if tokenizer.token_to_id(token).is_none() {
            bail!("the tokenizer has no {token} token: add the ChatML tokens first (Tokenizer::add_chatml_tokens)");
        }
    }
    let (text, spans) = format.render_spans(conversation);
    let leo_llama::TokenSpans {
        ids,
        offsets,
        added,
    } = tokenizer.encode_with_offsets(&text, true)?;
    let trained: Vec<(usize, usize)> = match loss_on {
        LossOn::All => Vec::new(),
        LossOn::Assistant => spans
            .iter()
            .filter(|s| s.role == Role::Assistant)
            .map(|s| (s.content.start, s.end.end))
            .collect(),
    };
    let labels = ids
        .iter()
        .zip(offsets.iter().zip(&added))
        .map(|(&id, (&(start, end), &added))| {
            let train = !added
                && match loss_on {
                    LossOn::All => true,
                    LossOn::Assistant => trained.iter().any(|&r| overlaps((start, end), r)),
                };
            if train {
                i64::from(id)
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    Ok(Encoded { ids, labels })
}

/// Whether a token's byte range shares a byte with a trained range; an empty token range
/// counts by its position.
fn overlaps(token: (usize, usize), range: (usize, usize)) -> bool {
    if token.0 == token.1 {
        range.0 <= token.0 && token.0 < range.1
    } else {
        token.0 < range.1 && range.0 < token.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Message;
    use serde_json::json;

    /// A byte-level BPE tokenizer over a few characters whose only merge, `\n` + `H`, makes a
    /// token that straddles the assistant header and its content; plus Llama's BOS template.
    fn straddling_tokenizer(dir: &std::path::Path) -> Tokenizer {
        let chars = "<>sytemuraisn\nHlo!.";
        let mut vocab = serde_json::Map::new();
        vocab.insert("<s>".into(), json!(0));
        for c in chars.chars() {
            let n = vocab.len();
            vocab.entry(c.to_string()).or_insert(json!(n));
        }
        let n = vocab.len();
        vocab.insert("\nH".into(), json!(n));
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
            "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": [["\n", "H"]]}
        });
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, tokenizer.to_string()).expect("write tokenizer");
        let mut t = Tokenizer::from_file(&path).expect("load tokenizer");
        assert_eq!(t.add_chatml_tokens().expect("chatml"), 2);
        t
    }

    #[test]
    fn a_token_straddling_the_header_and_the_content_is_trained() {
        let tmp = tempfile::tempdir().expect("tmp");
        let tok = straddling_tokenizer(tmp.path());
        let c = Conversation {
            id: "x".into(),
            messages: vec![
                Message::new(Role::User, "Hallo!"),
                Message::new(Role::Assistant, "Hallo."),
            ],
        };
        let format = ChatFormat {
            system_prompt: None,
        };
        let e = encode(&c, &tok, &format, LossOn::Assistant).expect("encode");
        let trained: Vec<String> = e
            .labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .map(|&l| tok.decode(&[l as u32], false).expect("decode"))
            .collect();
        // `\nH` straddles `assistant\n` | `Hallo.`: trained, with the rest of the answer and
        // its `<|im_end|>`. The user's `\nH` is not.
        assert_eq!(trained, ["\nH", "a", "l", "l", "o", ".", "<|im_end|>"]);
        let nh = tok.token_to_id("\nH").expect("merged token");
        assert_eq!(e.ids.iter().filter(|&&i| i == nh).count(), 2);
        assert_eq!(e.labels[0], IGNORE_INDEX, "BOS");
        let all = encode(&c, &tok, &format, LossOn::All).expect("encode");
        assert_eq!(all.ids, e.ids);
        assert_eq!(all.trained(), all.ids.len() - 1, "everything but BOS");
    }

    #[test]
    fn without_chatml_tokens_encoding_refuses() {
        let tmp = tempfile::tempdir().expect("tmp");
        straddling_tokenizer(tmp.path());
        // The file on disk is the tokenizer before the ChatML tokens were added.
        let bare = Tokenizer::from_file(&tmp.path().join("tokenizer.json")).expect("load");
        let c = Conversation {
            id: "x".into(),
            messages: vec![
                Message::new(Role::User, "H"),
                Message::new(Role::Assistant, "H"),
            ],
        };
        let e = encode(&c, &bare, &ChatFormat::default(), LossOn::All).unwrap_err();
        assert!(e.to_string().contains("no <|im_start|> token"), "{e}");
    }

    #[test]
    fn overlap_rule() {
        assert!(overlaps((3, 5), (4, 9)));
        assert!(overlaps((8, 12), (4, 9)));
        assert!(!overlaps((2, 4), (4, 9)));
        assert!(!overlaps((9, 10), (4, 9)));
        assert!(overlaps((4, 4), (4, 9)));
        assert!(!overlaps((9, 9), (4, 9)));
    }
}
