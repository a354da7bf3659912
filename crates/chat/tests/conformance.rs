//! leo-chat renders what transformers' `apply_chat_template` renders: real Hub templates
//! (LeoLM's ChatML as the sft stage writes it, plain ChatML, Llama-2-chat, Zephyr, Mistral's
//! with `raise_exception`) and one that uses the Python and Jinja features templates rely on,
//! over conversations with and without system messages, German text, stray whitespace, and
//! with and without the generation prompt. Conversations a template refuses must be refused by
//! both, with the template's message.
//!
//! Needs the venv of tools/torch-env.sh (`LEO_TORCH_PYTHON`); without it the test is skipped
//! on a workstation and fails in CI (`CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;

use leo_chat::{ChatError, ChatMessage, ChatTemplate};
use serde_json::{json, Value};

/// The template plugins/sft writes (`ChatFormat::default().template()`): ChatML with LeoLM's
/// German default system prompt when the conversation has none.
const LEOLM: &str = "{%- if not messages or messages[0]['role'] != 'system' -%}{{ '<|im_start|>system\\n' + 'Dies ist eine Unterhaltung zwischen einem intelligenten, hilfsbereitem KI-Assistenten und einem Nutzer.\\nDer Assistent gibt ausführliche, hilfreiche und ehrliche Antworten.' + '<|im_end|>\\n' }}{%- endif -%}{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}";

/// LeoLM/leo-hessianai-7b-chat's (plain ChatML).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// meta-llama/Llama-2-7b-chat-hf's.
const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/// HuggingFaceH4/zephyr-7b-beta's: its layout depends on trim_blocks and lstrip_blocks.
const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/// mistralai/Mistral-7B-Instruct-v0.1's: BOS once, roles checked with raise_exception.
const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// Features Hub templates use: loop.first/last, namespace, break/continue, Python string
/// methods, filters, slicing, tojson, `is defined`, whitespace control.
const FEATURES: &str = r#"{%- set ns = namespace(system='', turns=0) -%}
{%- for m in messages -%}
  {%- if loop.first and m.role == 'system' -%}
    {%- set ns.system = m.content.strip() -%}
    {%- continue -%}
  {%- endif -%}
  {%- if ns.turns >= 3 -%}{%- break -%}{%- endif -%}
  {%- set ns.turns = ns.turns + 1 -%}
  {%- if m.role not in ['user', 'assistant'] -%}{{ raise_exception('Unknown role: ' + m.role) }}{%- endif -%}
  {{ m.role.title() }} ({{ loop.index }}/{{ messages|length }}){% if m.name is defined %} [{{ m.name }}]{% endif %}: {{ m.content|trim|replace('ß', 'ss') }}
  {% if m.content.startswith(' ') %}(leading space){% endif %}
  {{ m.content.split()|length }} words, {{ m.content.upper()|length }} chars, {{ m | tojson }}
{% endfor -%}
{%- if ns.system %}[system: {{ ns.system }}]{% endif %}
{%- if add_generation_prompt %}{{ eos_token }}Assistant:{% endif %}"#;

/// Serialised as it is (a `json!` value would sort the messages' keys).
#[derive(serde::Serialize)]
struct Request<'a> {
    folders: &'a [PathBuf],
    conversations: &'a [Vec<ChatMessage>],
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn python() -> Option<PathBuf> {
    match std::env::var_os("LEO_TORCH_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => {
            let what =
                "LEO_TORCH_PYTHON is not set or not a file: `eval \"$(tools/torch-env.sh)\"`";
            assert!(!in_ci(), "CI=true and {what}");
            eprintln!("skipped: {what}");
            None
        }
    }
}

fn conversations() -> Vec<Vec<Value>> {
    let m = |role: &str, content: &str| json!({"role": role, "content": content});
    vec![
        vec![m("user", "Hallo, wie geht's?")],
        vec![
            m(
                "system",
                " Du bist ein hilfreicher Assistent. Antworte auf Deutsch.\n",
            ),
            m(
                "user",
                "Grüß Gott! Wie heißt die Hauptstadt von Österreich?",
            ),
            m("assistant", "  Die Hauptstadt ist Wien.  \n"),
            m(
                "user",
                "Und die größte Stadt? Ä Ö Ü ä ö ü ß – „Anführungszeichen“ \"quoted\" {{ x }}",
            ),
        ],
        vec![
            m("user", " Übersetze: 'good morning' "),
            m("assistant", "Guten Morgen!\n\nNoch etwas?"),
            json!({"role": "user", "content": "Ja, danke.", "name": "Jürgen"}),
            m("assistant", "Gern."),
            m("user", "Tschüss"),
        ],
        // Not alternating: Llama-2's and Mistral's templates refuse it.
        vec![m("user", "a"), m("user", "b")],
        vec![m("system", "Nur ein System-Prompt.")],
        vec![m("tool", "42")],
    ]
}

#[test]
fn templates_render_as_transformers_apply_chat_template() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().expect("temp dir");
    let added = |s: &str| json!({"__type": "AddedToken", "content": s, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true});
    let cases: Vec<(&str, Value)> = vec![
        (
            "leolm",
            json!({"chat_template": LEOLM, "bos_token": "<s>", "eos_token": "<|im_end|>"}),
        ),
        (
            "chatml",
            json!({"chat_template": CHATML, "bos_token": added("<s>"), "eos_token": added("</s>")}),
        ),
        (
            "llama2",
            json!({"chat_template": [{"name": "default", "template": LLAMA2}], "bos_token": added("<s>"), "eos_token": added("</s>"), "unk_token": "<unk>"}),
        ),
        (
            "zephyr",
            json!({"chat_template": ZEPHYR, "bos_token": "<s>", "eos_token": "</s>"}),
        ),
        (
            "mistral",
            json!({"chat_template": MISTRAL, "bos_token": "<s>", "eos_token": "</s>"}),
        ),
        (
            "features",
            json!({"chat_template": FEATURES, "bos_token": "<s>", "eos_token": "</s>"}),
        ),
    ];
    let mut folders = Vec::new();
    for (name, config) in &cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut config = config.clone();
        config["tokenizer_class"] = json!("PreTrainedTokenizerFast");
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config");
        folders.push(dir);
    }
    // As leo's message type serialises them (role, content, name): Python keeps that key order,
    // which `tojson` of a whole message shows.
    let convs: Vec<Vec<ChatMessage>> = conversations()
        .into_iter()
        .map(|c| serde_json::from_value(Value::Array(c)).expect("messages"))
        .collect();
    let request = tmp.path().join("request.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&Request {
            folders: &folders,
            conversations: &convs,
        })
        .expect("json"),
    )
    .expect("write request");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apply_chat_template.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&request)
        .output()
        .expect("run apply_chat_template.py");
    assert!(
        out.status.success(),
        "apply_chat_template.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).expect("reference JSON");

    let (mut texts, mut refusals) = (0, 0);
    for ((name, _), (dir, expected)) in cases.iter().zip(folders.iter().zip(&reference)) {
        let template = ChatTemplate::from_dir(dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut expected = expected.iter();
        for conv in &convs {
            for add_generation_prompt in [false, true] {
                let want = expected.next().expect("a reference per case");
                let ours = template.render(conv, add_generation_prompt);
                let what =
                    format!("{name}, {conv:?}, add_generation_prompt={add_generation_prompt}");
                match (want.get("text").and_then(Value::as_str), ours) {
                    (Some(text), Ok(ours)) => {
                        assert_eq!(ours, text, "{what}");
                        texts += 1;
                    }
                    (None, Err(ChatError::Raised(message))) => {
                        let theirs = want["error"].as_str().expect("error");
                        assert!(theirs.contains(&message), "{what}: {message} vs {theirs}");
                        refusals += 1;
                    }
                    (_, ours) => panic!("{what}: transformers gave {want}, leo {ours:?}"),
                }
            }
        }
    }
    // Every template rendered something and the role checks fired.
    assert!(
        texts >= 50 && refusals >= 6,
        "{texts} texts, {refusals} refusals"
    );
}
