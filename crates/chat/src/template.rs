//! A checkpoint's chat template, rendered as transformers renders it.
//!
//! transformers compiles templates in a Jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` with the `loopcontrols` extension, its own `tojson` filter and the
//! globals `raise_exception` and `strftime_now`, and renders them with `messages`, `tools`
//! (none), `documents` (none), `add_generation_prompt` and the tokenizer's named special tokens
//! (`bos_token`, `eos_token`, …). [`ChatTemplate`] sets minijinja up the same way; Python's
//! string methods come from `minijinja-contrib`'s `pycompat`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;
use serde_json::Value as Json;

use crate::openai::ChatMessage;

/// The named special tokens transformers passes to templates (its `SPECIAL_TOKENS_ATTRIBUTES`;
/// `extra_special_tokens` are not passed).
pub const SPECIAL_TOKEN_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Marks errors raised by the template's own `raise_exception(message)`, whose message is meant
/// for the user (e.g. "Conversation roles must alternate user/assistant/...").
const RAISED: &str = "raise_exception: ";

const TEMPLATE_NAME: &str = "chat_template";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{dir} has no chat template (neither chat_template.jinja nor a `chat_template` in \
         tokenizer_config.json); serve a chat model, such as the sft stage's output"
    )]
    NoTemplate { dir: PathBuf },
    #[error("chat template from {origin} does not compile: {message}")]
    Syntax { origin: String, message: String },
    /// The template called `raise_exception(message)`: the conversation is not one it accepts.
    #[error("{0}")]
    Raised(String),
    #[error("rendering the chat template: {0}")]
    Render(String),
    #[error("a conversation needs at least one message")]
    Empty,
}

/// A compiled chat template and the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// Where the template came from, for messages.
    origin: String,
    special_tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The template of a checkpoint folder as `AutoTokenizer.from_pretrained(dir)` finds it:
    /// `chat_template.jinja` if present (transformers ≥ 4.43 saves templates there), else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}` of
    /// which "default" is used). Special tokens come from `tokenizer_config.json` (strings or
    /// `{"content": …}` objects), then `special_tokens_map.json` for those it lacks.
    ///
    /// A folder without a template is an error: a base model has no chat format, and guessing
    /// one would prompt it in a way it was never trained on.
    pub fn from_dir(dir: &Path) -> Result<ChatTemplate, ChatError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let mut tokens = special_tokens(&config_path, config.as_ref())?;
        let map_path = dir.join("special_tokens_map.json");
        for (name, value) in special_tokens(&map_path, read_json(&map_path)?.as_ref())? {
            tokens.entry(name).or_insert(value);
        }
        let jinja_path = dir.join("chat_template.jinja");
        let (source, origin) = match std::fs::read_to_string(&jinja_path) {
            Ok(text) => (text, jinja_path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let template = config
                    .as_ref()
                    .and_then(|c| c.get("chat_template"))
                    .filter(|t| !t.is_null());
                match template {
                    Some(t) => (
                        template_text(&config_path, t)?,
                        config_path.display().to_string(),
                    ),
                    None => {
                        return Err(ChatError::NoTemplate {
                            dir: dir.to_path_buf(),
                        })
                    }
                }
            }
            Err(source) => {
                return Err(ChatError::Io {
                    path: jinja_path,
                    source,
                })
            }
        };
        ChatTemplate::with_origin(source, tokens, origin)
    }

    /// A template from its text; `special_tokens` maps names such as `bos_token` to their text.
    pub fn new(
        source: &str,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::with_origin(source.to_string(), special_tokens, "a string".into())
    }

    fn with_origin(
        source: String,
        special_tokens: BTreeMap<String, String>,
        origin: String,
    ) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", crate::pyjson::tojson);
        env.add_function("raise_exception", |message: String| -> Result<Value, _> {
            Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{message}"),
            ))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| ChatError::Syntax {
                origin: origin.clone(),
                message: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            source,
            origin,
            special_tokens,
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (a file, or "a string").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A named special token's text (`"bos_token"`, `"eos_token"`, …).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.get(name).map(String::as_str)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.special_token("bos_token")
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.special_token("eos_token")
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with(messages, add_generation_prompt, &BTreeMap::new())
    }

    /// [`ChatTemplate::render`] with extra template variables (transformers' `**kwargs`, which
    /// override special tokens of the same name). `messages` is anything that serialises to a
    /// list of message objects.
    pub fn render_with<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
        extra: &BTreeMap<String, Json>,
    ) -> Result<String, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::Empty);
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        let mut ctx: BTreeMap<String, Value> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        for (k, v) in extra {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        template.render(ctx).map_err(|e| {
            let raised = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .filter_map(|e| e.downcast_ref::<minijinja::Error>())
                .find_map(|e| e.detail().and_then(|d| d.strip_prefix(RAISED)));
            match raised {
                Some(message) => ChatError::Raised(message.to_string()),
                None => ChatError::Render(describe(&e)),
            }
        })
    }

    /// Whether the tokenizer should add its special tokens (Llama: BOS) when encoding a
    /// rendered prompt: yes unless the text already starts with the BOS token.
    ///
    /// leo's sft stage trains on `tokenizer(rendered)` (BOS first) with a ChatML template that
    /// writes no BOS, so its models must be prompted with one; templates such as Llama-2's write
    /// `{{ bos_token }}` themselves and must not get a second. (transformers'
    /// `apply_chat_template(tokenize=True)` never adds one, which drops LeoLM's BOS.)
    pub fn add_special_tokens(&self, rendered: &str) -> bool {
        match self.bos_token() {
            Some(bos) if !bos.is_empty() => !rendered.starts_with(bos),
            _ => true,
        }
    }
}

/// A minijinja error as one line: its description and where in the template it happened.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    if let Some(line) = e.line() {
        text.push_str(&format!(" (template line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// `strftime_now(format)`: the local time formatted with Python's `strftime` codes (chrono's
/// are the same for the common ones). An unknown code is an error, not a panic.
fn strftime_now(format: String) -> Result<Value, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format {format:?}"),
        ));
    }
    Ok(Value::from(
        chrono::Local::now()
            .format_with_items(items.into_iter())
            .to_string(),
    ))
}

/// A JSON file, or `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Json>, ChatError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ChatError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ChatError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The named special tokens of a tokenizer config (strings or AddedToken objects).
fn special_tokens(
    path: &Path,
    config: Option<&Json>,
) -> Result<BTreeMap<String, String>, ChatError> {
    let mut out = BTreeMap::new();
    let Some(config) = config else {
        return Ok(out);
    };
    for name in SPECIAL_TOKEN_NAMES {
        let text = match config.get(name) {
            None | Some(Json::Null) => continue,
            Some(Json::String(s)) => s.clone(),
            Some(Json::Object(o)) => match o.get("content") {
                Some(Json::String(s)) => s.clone(),
                _ => {
                    return Err(ChatError::Config {
                        path: path.to_path_buf(),
                        message: format!("`{name}` is an object without a string `content`"),
                    })
                }
            },
            Some(other) => {
                return Err(ChatError::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "`{name}` must be a string or an object with `content`, not {other}"
                    ),
                })
            }
        };
        out.insert(name.to_string(), text);
    }
    Ok(out)
}

/// `chat_template` as a string, or the "default" of a list of `{name, template}`.
fn template_text(path: &Path, value: &Json) -> Result<String, ChatError> {
    let bad = |message: String| ChatError::Config {
        path: path.to_path_buf(),
        message,
    };
    match value {
        Json::String(s) => Ok(s.clone()),
        Json::Array(list) => {
            let mut names = Vec::new();
            for (i, entry) in list.iter().enumerate() {
                let name = entry
                    .get("name")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(format!("`chat_template[{i}]` has no string `name`")))?;
                let template = entry
                    .get("template")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(format!("`chat_template[{i}]` has no string `template`")))?;
                if name == "default" {
                    return Ok(template.to_string());
                }
                names.push(name.to_string());
            }
            Err(bad(format!(
                "`chat_template` lists templates {names:?} but none named \"default\""
            )))
        }
        other => Err(bad(format!(
            "`chat_template` must be a string or a list of {{name, template}}, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> BTreeMap<String, String> {
        [("bos_token", "<s>"), ("eos_token", "</s>")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_with_trimmed_blocks_python_methods_and_special_tokens() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n  {% if loop.first %}{{ bos_token }}{% endif %}\n{{ m.role.title() }}: {{ m['content'].strip() }}{{ eos_token }}\n{% endfor %}\n{% if add_generation_prompt %}Assistant:{% endif %}",
            tokens(),
        )
        .unwrap();
        let msgs = [
            ChatMessage::new("user", "  Grüß Gott!  "),
            ChatMessage::new("assistant", "Servus."),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<s>User: Grüß Gott!</s>\nAssistant: Servus.</s>\nAssistant:"
        );
        assert!(!t.add_special_tokens("<s>User"));
        assert!(t.add_special_tokens("User"));
    }

    #[test]
    fn raise_exception_becomes_the_templates_message() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Only user first!') }}{% endif %}ok",
            tokens(),
        )
        .unwrap();
        let err = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .unwrap_err();
        assert!(
            matches!(&err, ChatError::Raised(m) if m == "Only user first!"),
            "{err:?}"
        );
        assert!(matches!(t.render(&[], false), Err(ChatError::Empty)));
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2, sort_keys=true) }}|{{ 'ü\"' | tojson(ensure_ascii=true) }}",
            tokens(),
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "ä\n")], false).unwrap(),
            "{\"role\": \"user\", \"content\": \"ä\\n\"}|{\n  \"content\": \"ä\\n\",\n  \"role\": \"user\"\n}|\"\\u00fc\\\"\""
        );
    }

    #[test]
    fn strftime_now_formats_the_local_time_and_rejects_bad_codes() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", tokens()).unwrap();
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "")], false).unwrap(),
            year
        );
        let bad = ChatTemplate::new("{{ strftime_now('%Q') }}", tokens()).unwrap();
        assert!(bad.render(&[ChatMessage::new("user", "")], false).is_err());
    }

    #[test]
    fn loads_named_templates_and_added_token_objects_and_names_the_file_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &config,
            r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
                "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D"}]}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false).unwrap(),
            "<s>D"
        );
        assert_eq!(t.eos_token(), Some("</s>"));
        // chat_template.jinja wins over the config, as in transformers.
        std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false).unwrap(),
            "J"
        );

        let bare = tempfile::tempdir().unwrap();
        std::fs::write(bare.path().join("tokenizer_config.json"), "{}").unwrap();
        let err = ChatTemplate::from_dir(bare.path()).unwrap_err().to_string();
        assert!(
            err.contains(&bare.path().display().to_string()) && err.contains("chat template"),
            "{err}"
        );
        std::fs::write(bare.path().join("tokenizer_config.json"), "{").unwrap();
        let err = ChatTemplate::from_dir(bare.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer_config.json"), "{err}");
        let err = ChatTemplate::new("{% for %}", tokens())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not compile"), "{err}");
    }
}
