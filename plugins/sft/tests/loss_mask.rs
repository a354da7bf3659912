//! The loss mask of one short two-turn conversation, token by token, written out by hand
//! (Llama-2 tokenizer with ChatML tokens, no system prompt).

mod support;

use leo_plugin_sft::{encode, ChatFormat, Conversation, LossOn, Message, Role, IGNORE_INDEX};

#[test]
fn hand_checked_loss_mask_in_both_modes() {
    let Some(shared) = support::shared_data() else {
        return;
    };
    let tok = support::chat_tokenizer(&shared);
    let conv = Conversation {
        id: "hand".into(),
        messages: vec![
            Message::new(Role::User, "Hallo!"),
            Message::new(Role::Assistant, "Guten Tag."),
            Message::new(Role::User, "Danke"),
            Message::new(Role::Assistant, "Bitte schön."),
        ],
    };
    let format = ChatFormat {
        system_prompt: None,
    };
    // (token, trained with LossOn::Assistant). The text is
    // <|im_start|>user\nHallo!<|im_end|>\n<|im_start|>assistant\nGuten Tag.<|im_end|>\n
    // <|im_start|>user\nDanke<|im_end|>\n<|im_start|>assistant\nBitte schön.<|im_end|>\n
    // The Llama-2 tokenizer.json prepends ▁ to each stretch of text after a special token:
    // `▁user`, `▁assistant`, and a lone `▁` before each newline after <|im_end|>.
    let expected: [(&str, bool); 39] = [
        ("<s>", false),
        ("<|im_start|>", false),
        ("▁user", false),
        ("<0x0A>", false),
        ("H", false),
        ("allo", false),
        ("!", false),
        ("<|im_end|>", false),
        ("▁", false),
        ("<0x0A>", false),
        ("<|im_start|>", false),
        ("▁assistant", false),
        ("<0x0A>", false),
        ("G", true),
        ("uten", true),
        ("▁Tag", true),
        (".", true),
        ("<|im_end|>", true),
        ("▁", false),
        ("<0x0A>", false),
        ("<|im_start|>", false),
        ("▁user", false),
        ("<0x0A>", false),
        ("Dan", false),
        ("ke", false),
        ("<|im_end|>", false),
        ("▁", false),
        ("<0x0A>", false),
        ("<|im_start|>", false),
        ("▁assistant", false),
        ("<0x0A>", false),
        ("B", true),
        ("itte", true),
        ("▁sch", true),
        ("ön", true),
        (".", true),
        ("<|im_end|>", true),
        ("▁", false),
        ("<0x0A>", false),
    ];
    let want_ids: Vec<u32> = expected
        .iter()
        .map(|(t, _)| {
            tok.token_to_id(t)
                .unwrap_or_else(|| panic!("{t} is not a token"))
        })
        .collect();

    let asst = encode(&conv, &tok, &format, LossOn::Assistant).expect("encode");
    assert_eq!(asst.ids, want_ids);
    let want_labels: Vec<i64> = expected
        .iter()
        .zip(&want_ids)
        .map(
            |(&(_, trained), &id)| {
                if trained {
                    i64::from(id)
                } else {
                    IGNORE_INDEX
                }
            },
        )
        .collect();
    assert_eq!(asst.labels, want_labels);
    assert_eq!(asst.trained(), 11);

    // LossOn::All: everything but BOS.
    let all = encode(&conv, &tok, &format, LossOn::All).expect("encode");
    assert_eq!(all.ids, want_ids);
    let mut want_all: Vec<i64> = want_ids.iter().map(|&i| i64::from(i)).collect();
    want_all[0] = IGNORE_INDEX;
    assert_eq!(all.labels, want_all);
}
