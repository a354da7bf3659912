//! leo's ChatML against the peers users will prompt the fine-tuned model with: 22 real and
//! hand-written conversations (12 from the GermanDPR instruction set, 5 OASST and 5 ShareGPT
//! fixtures with system messages or without, umlauts, emoji, code blocks, leading and trailing
//! spaces and newlines, template look-alikes) rendered by [`ChatFormat::render`] and by
//! transformers' `apply_chat_template` with leo's [`ChatFormat::template`], for the default
//! system prompt, none, and one full of characters a Jinja literal must escape.
//!
//! Ids: [`encode`] must give exactly the ids of the rendered text from the `tokenizers` library
//! (`Tokenizer.from_file` on the same tokenizer.json) and from transformers' AutoTokenizer. The
//! folder says `tokenizer_class = "PreTrainedTokenizerFast"`: with `LlamaTokenizerFast`,
//! transformers 5 replaces the tokenizer.json normaliser by its own Metaspace pre-tokenizer
//! (../shared/design/PEERS.md) and disagrees with the tokenizer.json itself, and so with
//! training, at the start of every text after a special token (`▁system` vs `system`, and the
//! `▁` before each newline after `<|im_end|>`).

mod support;

use std::path::Path;

use leo_plugin_sft::{
    encode, read_dataset, ChatFormat, Conversation, Format, LossOn, OnMalformed, Role, IGNORE_INDEX,
};
use serde_json::{json, Value};

/// A system prompt a Jinja string literal must escape: quotes, backslashes, control
/// characters, and text that looks like template syntax.
const TRICKY_PROMPT: &str = "Sag's mit \"Anführungszeichen\", einem Backslash \\ und \\n,\n\tTab, \
                             Wagenrücklauf\r\n und {{ messages }} {% if x %}{% raw %}.";

fn conversations(shared: &Path) -> Vec<Conversation> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let dpr = read_dataset(
        &shared.join("demo/sft/germandpr-instruct.jsonl"),
        Format::Auto,
        OnMalformed::Fail,
    )
    .expect("the GermanDPR instruction set");
    assert_eq!(dpr.format, Format::Instruction);
    assert_eq!(dpr.conversations.len(), 2050);
    let mut all: Vec<Conversation> = dpr.conversations.into_iter().take(12).collect();
    for (file, layout) in [
        ("oasst.jsonl", Format::Oasst),
        ("sharegpt.jsonl", Format::Sharegpt),
    ] {
        let d = read_dataset(&here.join(file), Format::Auto, OnMalformed::Fail).expect(file);
        assert_eq!(d.format, layout);
        assert_eq!(d.conversations.len(), 5);
        all.extend(d.conversations);
    }
    let with_system = all
        .iter()
        .filter(|c| c.messages[0].role == Role::System)
        .count();
    let multi_turn = all.iter().filter(|c| c.messages.len() > 3).count();
    assert!(
        with_system >= 3 && multi_turn >= 5,
        "fixtures lost their variety"
    );
    all
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("lists of ids")
}

#[test]
fn chatml_rendering_and_ids_match_transformers_and_tokenizers() {
    let (Some(shared), Some(python)) = (support::shared_data(), support::python()) else {
        return;
    };
    let convs = conversations(&shared);
    let tok = support::chat_tokenizer(&shared);
    let formats = [
        ChatFormat::default(),
        ChatFormat {
            system_prompt: None,
        },
        ChatFormat {
            system_prompt: Some(TRICKY_PROMPT.to_string()),
        },
    ];

    let tmp = tempfile::tempdir().expect("temp dir");
    let folder = tmp.path().join("tokenizer");
    std::fs::create_dir(&folder).expect("mkdir");
    tok.save(&folder.join("tokenizer.json"))
        .expect("save tokenizer.json");
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": true,
        "add_eos_token": false,
        "model_max_length": 8192,
        "chat_template": formats[0].template(),
    });
    std::fs::write(folder.join("tokenizer_config.json"), config.to_string())
        .expect("write tokenizer_config.json");
    let request = json!({
        "conversations": convs.iter().map(|c| &c.messages).collect::<Vec<_>>(),
        "templates": formats.iter().map(ChatFormat::template).collect::<Vec<_>>(),
    });
    let request_path = tmp.path().join("request.json");
    std::fs::write(&request_path, request.to_string()).expect("write request");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_reference.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&folder)
        .arg(&request_path)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .expect("run chat_reference.py");
    assert!(
        out.status.success(),
        "chat_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).expect("reference JSON");
    assert_eq!(reference["auto_class"], "TokenizersBackend");

    let mut tokens = 0;
    for (t, format) in formats.iter().enumerate() {
        let r = &reference["templates"][t];
        let (rendered, prompts) = (strings(&r["rendered"]), strings(&r["prompts"]));
        let (ids_auto, ids_raw) = (id_lists(&r["ids_auto"]), id_lists(&r["ids_tokenizers"]));
        assert_eq!(rendered.len(), convs.len());
        for (c, conv) in convs.iter().enumerate() {
            let at = format!("format {t}, conversation {}", conv.id);
            let ours = format.render(conv);
            assert_eq!(ours, rendered[c], "{at}: rendered text");
            // add_generation_prompt: everything up to the last assistant header.
            let header = "<|im_start|>assistant\n";
            let cut = ours.rfind(header).expect("an assistant turn") + header.len();
            assert_eq!(&ours[..cut], prompts[c], "{at}: generation prompt");

            let all = encode(conv, &tok, format, LossOn::All).expect("encode");
            assert_eq!(all.ids, ids_raw[c], "{at}: ids vs tokenizers");
            assert_eq!(all.ids, ids_auto[c], "{at}: ids vs AutoTokenizer");
            assert_eq!(all.ids[0], 1, "BOS first");
            assert_eq!(all.labels[0], IGNORE_INDEX, "BOS untrained");
            assert!(all.labels[1..]
                .iter()
                .zip(&all.ids[1..])
                .all(|(&l, &i)| l == i64::from(i)));
            tokens += all.ids.len();

            // Assistant-only: the same ids; the trained runs are exactly the assistant
            // contents, each with its <|im_end|>.
            let asst = encode(conv, &tok, format, LossOn::Assistant).expect("encode");
            assert_eq!(asst.ids, all.ids);
            let mut runs: Vec<Vec<u32>> = Vec::new();
            let mut previous_trained = false;
            for (&id, &label) in asst.ids.iter().zip(&asst.labels) {
                let trained = label != IGNORE_INDEX;
                if trained {
                    assert_eq!(label, i64::from(id));
                    if !previous_trained {
                        runs.push(Vec::new());
                    }
                    runs.last_mut().expect("a run").push(id);
                }
                previous_trained = trained;
            }
            let answers: Vec<String> = conv
                .messages
                .iter()
                .filter(|m| m.role == Role::Assistant)
                .map(|m| format!("{}<|im_end|>", m.content))
                .collect();
            assert_eq!(
                runs.len(),
                answers.len(),
                "{at}: one trained run per answer"
            );
            for (run, answer) in runs.iter().zip(&answers) {
                let decoded = tok.decode(run, false).expect("decode");
                // The Llama decoder drops one leading space of what it decodes.
                let want = answer.strip_prefix(' ').unwrap_or(answer);
                assert_eq!(decoded, want, "{at}: trained tokens");
            }
        }
    }
    assert!(tokens > 10_000, "only {tokens} tokens compared");
}
