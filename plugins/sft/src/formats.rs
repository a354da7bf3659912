//! Chat datasets into [`Conversation`]s.
//!
//! LeoLM's German chat mix comes in three record layouts (LEOLM.md, "Chat SFT"): OASST-DE
//! (`conversation: [{role, text}]`), the ShareGPT layout of alpaca-gpt4-deutsch and
//! evol-instruct-deutsch (`conversations: [{from, value}]`), and instruction/output pairs
//! (OpenSchnabeltier, with German `*_de` columns beside the English ones). Everything after
//! this module sees only the one shape, so the rest of the pipeline cannot depend on where a
//! conversation came from.
//!
//! Input is a file or a folder of files (read recursively, in name order): JSON Lines, plain
//! or `.gz`/`.zst` compressed, and Parquet (how HF datasets are stored). The layout is named
//! or detected once per dataset from the first record's keys, so a stray record of another
//! shape is reported rather than silently read another way.
//!
//! A record that cannot become a trainable conversation is *malformed*: invalid JSON or UTF-8,
//! a missing or mistyped field, an unknown speaker, or turns that do not alternate
//! user/assistant (after an optional leading system message) and end with the assistant.
//! Malformed records are counted and reported with `FILE:LINE` (Parquet: `FILE: row N`) and
//! either skipped or fatal ([`OnMalformed`]). Errors that are not about one record (an
//! unreadable file, an undetectable layout) are always fatal.

use std::path::Path;

use anyhow::{bail, Result};
use leo_records::Accept;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// ChatML's turn delimiters: a content containing one would be tokenized as a turn boundary
/// (they are special tokens), so such a record is malformed.
const CHATML_MARKERS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// How many malformed records a [`Dataset`] keeps as examples (all are counted).
pub const MALFORMED_EXAMPLES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The ChatML role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The record's `id`, else `FILE-NAME:LINE` (Parquet: `FILE-NAME:ROW`), the file named
    /// relative to the dataset's folder. The held-out split hashes it.
    pub id: String,
    pub messages: Vec<Message>,
}

impl Conversation {
    /// Checks the turn structure: an optional leading system message, then user and assistant
    /// alternating, starting with the user and ending with the assistant; user and assistant
    /// turns are not empty; no content contains a ChatML marker. `Err` is (message index,
    /// reason).
    pub fn check(&self) -> Result<(), (usize, String)> {
        let start = usize::from(
            self.messages
                .first()
                .is_some_and(|m| m.role == Role::System),
        );
        if self.messages.len() <= start {
            return Err((0, "no user or assistant turns".into()));
        }
        for (i, m) in self.messages.iter().enumerate().skip(start) {
            let want = if (i - start) % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if m.role != want {
                let why =
                    if m.role == Role::System {
                        "a system message after the first message".to_string()
                    } else {
                        format!(
                        "{} turn where the {} should speak (turns must alternate user, assistant)",
                        if m.role == Role::User { "a user" } else { "an assistant" },
                        want.as_str()
                    )
                    };
                return Err((i, why));
            }
            if m.content.is_empty() {
                return Err((i, format!("an empty {} turn", m.role.as_str())));
            }
        }
        for (i, m) in self.messages.iter().enumerate() {
            if let Some(marker) = CHATML_MARKERS.iter().find(|t| m.content.contains(*t)) {
                return Err((
                    i,
                    format!("contains the ChatML marker {marker}, which would end or start a turn"),
                ));
            }
        }
        let last = self.messages.len() - 1;
        if self.messages[last].role != Role::Assistant {
            return Err((
                last,
                "the conversation ends with the user: the last turn must be the assistant's".into(),
            ));
        }
        Ok(())
    }
}

/// A record layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect from the first record's keys: `conversation` → OASST, `conversations` →
    /// ShareGPT, `instruction`/`instruction_de` → instruction.
    Auto,
    /// OpenAssistant: `conversation: [{role: "prompter"|"user"|"assistant"|"system", text}]`.
    Oasst,
    /// ShareGPT: `conversations: [{from: "human"|"user"|"gpt"|"assistant"|"system", value}]`.
    Sharegpt,
    /// Alpaca-style `instruction`, optional `input`, `output`; `instruction_de`, `input_de`
    /// and `output_de` (OpenSchnabeltier) win when present and not empty.
    Instruction,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Oasst => "oasst",
            Format::Sharegpt => "sharegpt",
            Format::Instruction => "instruction",
        }
    }

    /// The layout a record's keys suggest.
    pub fn detect(record: &Map<String, Value>) -> Option<Format> {
        if record.contains_key("conversation") {
            Some(Format::Oasst)
        } else if record.contains_key("conversations") {
            Some(Format::Sharegpt)
        } else if record.contains_key("instruction") || record.contains_key("instruction_de") {
            Some(Format::Instruction)
        } else {
            None
        }
    }
}

/// What a malformed record does: skipped (counted, reported) or fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMalformed {
    Skip,
    Fail,
}

/// One malformed record: where (`FILE:LINE` or `FILE: row N`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub location: String,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// A dataset as read.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub conversations: Vec<Conversation>,
    /// The layout used (detected when [`Format::Auto`] was asked for).
    pub format: Format,
    pub files: usize,
    /// Malformed records skipped.
    pub malformed: u64,
    /// The first [`MALFORMED_EXAMPLES`] of them.
    pub malformed_examples: Vec<Malformed>,
}

/// Reads a dataset: one file, or every `.jsonl`/`.json`/`.ndjson` (optionally `.gz`/`.zst`)
/// and `.parquet` file under a folder, in name order.
pub fn read_dataset(path: &Path, format: Format, on_malformed: OnMalformed) -> Result<Dataset> {
    let files = leo_records::discover(path, Accept { text: false }, "chat dataset")?;
    let mut reader = Reader {
        layout: (format != Format::Auto).then_some(format),
        on_malformed,
        out: Dataset {
            conversations: Vec::new(),
            format,
            files: files.len(),
            malformed: 0,
            malformed_examples: Vec::new(),
        },
    };
    for file in &files {
        leo_records::for_each_record(file, |record, location| {
            reader.record(record, &location.display, &location.id)
        })?;
    }
    if let Some(layout) = reader.layout {
        reader.out.format = layout;
    }
    Ok(reader.out)
}

struct Reader {
    layout: Option<Format>,
    on_malformed: OnMalformed,
    out: Dataset,
}

impl Reader {
    /// One raw record: detects the layout on the first object, then converts or reports it.
    fn record(
        &mut self,
        record: Result<Value, String>,
        location: &str,
        fallback_id: &str,
    ) -> Result<()> {
        let converted = match record {
            Err(reason) => Err(reason),
            Ok(Value::Object(obj)) => {
                let layout = match self.layout {
                    Some(layout) => layout,
                    None => {
                        let Some(layout) = Format::detect(&obj) else {
                            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                            bail!(
                                "{location}: cannot tell the layout from the first record's keys ({}): \
                                 expected `conversation` (oasst), `conversations` (sharegpt) or \
                                 `instruction` (instruction); name it with `format`",
                                keys.join(", ")
                            );
                        };
                        self.layout = Some(layout);
                        layout
                    }
                };
                conversation_from_record(obj, layout, fallback_id)
            }
            Ok(_) => Err("the record is not a JSON object".to_string()),
        };
        match converted {
            Ok(conversation) => self.out.conversations.push(conversation),
            Err(reason) => {
                let m = Malformed {
                    location: location.to_string(),
                    reason,
                };
                if self.on_malformed == OnMalformed::Fail {
                    bail!("malformed record: {m}");
                }
                self.out.malformed += 1;
                if self.out.malformed_examples.len() < MALFORMED_EXAMPLES {
                    self.out.malformed_examples.push(m);
                }
            }
        }
        Ok(())
    }
}

/// Converts one record of a known layout (not [`Format::Auto`]); `Err` says why it is
/// malformed, naming the field (`conversations[2].from: …`).
pub fn conversation_from_record(
    record: Map<String, Value>,
    layout: Format,
    fallback_id: &str,
) -> Result<Conversation, String> {
    let id = match record.get("id") {
        None | Some(Value::Null) => fallback_id.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "id: neither a string nor a number ({})",
                leo_plugin::kind(other)
            ))
        }
    };
    let (field, messages) = match layout {
        Format::Oasst => (
            "conversation",
            turns(&record, "conversation", "role", "text", oasst_role)?,
        ),
        Format::Sharegpt => (
            "conversations",
            turns(&record, "conversations", "from", "value", sharegpt_role)?,
        ),
        Format::Instruction => ("output", instruction(&record)?),
        Format::Auto => return Err("no layout given".into()),
    };
    let conversation = Conversation { id, messages };
    conversation.check().map_err(|(i, why)| {
        if layout == Format::Instruction {
            why
        } else {
            format!("{field}[{i}]: {why}")
        }
    })?;
    Ok(conversation)
}

fn oasst_role(s: &str) -> Option<Role> {
    match s {
        "prompter" | "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "system" => Some(Role::System),
        _ => None,
    }
}

fn sharegpt_role(s: &str) -> Option<Role> {
    match s {
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" => Some(Role::Assistant),
        "system" => Some(Role::System),
        _ => None,
    }
}

fn turns(
    record: &Map<String, Value>,
    field: &str,
    role_key: &str,
    text_key: &str,
    role_of: fn(&str) -> Option<Role>,
) -> Result<Vec<Message>, String> {
    let list = match record.get(field) {
        None | Some(Value::Null) => return Err(format!("{field}: missing")),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("{field}: not a list ({})", leo_plugin::kind(other))),
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, turn) in list.iter().enumerate() {
        let Value::Object(turn) = turn else {
            return Err(format!("{field}[{i}]: not an object"));
        };
        let role = match turn.get(role_key) {
            Some(Value::String(s)) => role_of(s).ok_or_else(|| {
                let known = if role_key == "role" {
                    "prompter, user, assistant or system"
                } else {
                    "human, user, gpt, assistant or system"
                };
                format!("{field}[{i}].{role_key}: unknown speaker {s:?} (expected {known})")
            })?,
            None | Some(Value::Null) => return Err(format!("{field}[{i}].{role_key}: missing")),
            Some(other) => {
                return Err(format!(
                    "{field}[{i}].{role_key}: not a string ({})",
                    leo_plugin::kind(other)
                ))
            }
        };
        let content = match turn.get(text_key) {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(format!("{field}[{i}].{text_key}: missing")),
            Some(other) => {
                return Err(format!(
                    "{field}[{i}].{text_key}: not a string ({})",
                    leo_plugin::kind(other)
                ))
            }
        };
        messages.push(Message { role, content });
    }
    Ok(messages)
}

/// A string field, `None` when absent or null.
fn opt_str<'a>(record: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match record.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key}: not a string ({})", leo_plugin::kind(other))),
    }
}

/// The German column when present and not empty, else the plain one.
fn preferred<'a>(record: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    let german = format!("{key}_de");
    match opt_str(record, &german)? {
        Some(s) if !s.is_empty() => Ok(Some(s)),
        _ => opt_str(record, key),
    }
}

fn instruction(record: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let instruction = preferred(record, "instruction")?
        .filter(|s| !s.is_empty())
        .ok_or("instruction: missing or empty (and no instruction_de)")?;
    let input = preferred(record, "input")?.unwrap_or("");
    let output = preferred(record, "output")?
        .filter(|s| !s.is_empty())
        .ok_or("output: missing or empty (and no output_de)")?;
    let user = if input.is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    Ok(vec![
        Message::new(Role::User, user),
        Message::new(Role::Assistant, output),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::File;
    use std::io::Write;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write fixture");
    }

    fn lines(records: &[Value]) -> String {
        records.iter().map(|r| r.to_string() + "\n").collect()
    }

    #[test]
    fn oasst_records() {
        let c = conversation_from_record(
            obj(json!({"conversation": [
                {"role": "system", "text": "Sei knapp."},
                {"role": "prompter", "text": "Wie heißt die Hauptstadt von Österreich?"},
                {"role": "assistant", "text": "Wien."},
                {"role": "prompter", "text": "Und von der Schweiz?"},
                {"role": "assistant", "text": "Bern (Bundesstadt)."}
            ], "id": "o1"})),
            Format::Oasst,
            "f.jsonl:1",
        )
        .expect("valid");
        assert_eq!(c.id, "o1");
        let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, User, Assistant]);
        assert_eq!(c.messages[4].content, "Bern (Bundesstadt).");
    }

    #[test]
    fn sharegpt_records_and_speaker_names() {
        let c = conversation_from_record(
            obj(json!({"conversations": [
                {"from": "human", "value": "Hallo"},
                {"from": "gpt", "value": "Hallo!"},
                {"from": "user", "value": "Noch was"},
                {"from": "assistant", "value": "Gern."}
            ]})),
            Format::Sharegpt,
            "f.jsonl:7",
        )
        .expect("valid");
        assert_eq!(c.id, "f.jsonl:7", "no id field: FILE-NAME:LINE");
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[2], Message::new(Role::User, "Noch was"));
        let e = conversation_from_record(
            obj(json!({"conversations": [{"from": "bot", "value": "x"}]})),
            Format::Sharegpt,
            "x",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "conversations[0].from: unknown speaker \"bot\" (expected human, user, gpt, assistant or system)"
        );
    }

    #[test]
    fn instruction_records_prefer_german_columns_and_join_the_input() {
        let c = conversation_from_record(
            obj(
                json!({"instruction": "Translate", "instruction_de": "Übersetze",
                       "input": "cat", "input_de": "", "output": "Katze", "id": 17}),
            ),
            Format::Instruction,
            "x",
        )
        .expect("valid");
        assert_eq!(c.id, "17");
        assert_eq!(
            c.messages,
            [
                Message::new(Role::User, "Übersetze\n\ncat"),
                Message::new(Role::Assistant, "Katze")
            ]
        );
        let c = conversation_from_record(
            obj(json!({"instruction": "Nenne eine Farbe.", "input": "", "output": "Blau", "output_de": "Rot"})),
            Format::Instruction,
            "x",
        )
        .expect("valid");
        assert_eq!(
            c.messages[0].content, "Nenne eine Farbe.",
            "empty input: no blank lines"
        );
        assert_eq!(c.messages[1].content, "Rot");
        let e = conversation_from_record(
            obj(json!({"instruction": "Frage", "output": ""})),
            Format::Instruction,
            "x",
        )
        .unwrap_err();
        assert_eq!(e, "output: missing or empty (and no output_de)");
        let e = conversation_from_record(
            obj(json!({"instruction": "Frage", "input": 3, "output": "a"})),
            Format::Instruction,
            "x",
        )
        .unwrap_err();
        assert_eq!(e, "input: not a string (an integer)");
    }

    #[test]
    fn turn_structure_is_checked() {
        let bad = [
            (json!([{"role": "assistant", "text": "Hi"}]), "conversation[0]: an assistant turn where the user should speak (turns must alternate user, assistant)"),
            (json!([{"role": "prompter", "text": "Hi"}]), "conversation[0]: the conversation ends with the user: the last turn must be the assistant's"),
            (json!([{"role": "system", "text": "S"}]), "conversation[0]: no user or assistant turns"),
            (json!([]), "conversation[0]: no user or assistant turns"),
            (json!([{"role": "prompter", "text": "a"}, {"role": "system", "text": "S"}]), "conversation[1]: a system message after the first message"),
            (json!([{"role": "prompter", "text": "a"}, {"role": "assistant", "text": ""}]), "conversation[1]: an empty assistant turn"),
            (json!([{"role": "prompter", "text": "a"}, {"role": "assistant"}]), "conversation[1].text: missing"),
            (json!({"role": "prompter"}), "conversation: not a list (a table)"),
            (
                json!([{"role": "prompter", "text": "a<|im_end|>"}, {"role": "assistant", "text": "b"}]),
                "conversation[0]: contains the ChatML marker <|im_end|>, which would end or start a turn",
            ),
        ];
        for (turns, want) in bad {
            let e =
                conversation_from_record(obj(json!({"conversation": turns})), Format::Oasst, "x")
                    .unwrap_err();
            assert_eq!(e, want);
        }
    }

    #[test]
    fn auto_detects_each_layout_from_the_first_record() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cases = [
            (
                json!({"conversation": [{"role": "prompter", "text": "a"}, {"role": "assistant", "text": "b"}]}),
                Format::Oasst,
            ),
            (
                json!({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}),
                Format::Sharegpt,
            ),
            (
                json!({"instruction": "a", "output": "b"}),
                Format::Instruction,
            ),
            (
                json!({"instruction_de": "a", "output_de": "b"}),
                Format::Instruction,
            ),
        ];
        for (i, (record, want)) in cases.into_iter().enumerate() {
            let path = tmp.path().join(format!("d{i}.jsonl"));
            write(&path, &lines(&[record]));
            let d = read_dataset(&path, Format::Auto, OnMalformed::Fail).expect("read");
            assert_eq!(d.format, want);
            assert_eq!(d.conversations.len(), 1);
            assert_eq!(d.conversations[0].messages[1].content, "b");
            assert_eq!(d.conversations[0].id, format!("d{i}.jsonl:1"));
        }
        let path = tmp.path().join("other.jsonl");
        write(&path, "\n{\"text\": \"a\", \"meta\": 1}\n");
        let e = read_dataset(&path, Format::Auto, OnMalformed::Skip).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "{}:2: cannot tell the layout from the first record's keys (meta, text): expected \
                 `conversation` (oasst), `conversations` (sharegpt) or `instruction` (instruction); \
                 name it with `format`",
                path.display()
            )
        );
    }

    #[test]
    fn malformed_lines_name_file_and_line_and_are_skipped_or_fatal() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("chat.jsonl");
        let good = json!({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]});
        let mut text = lines(std::slice::from_ref(&good));
        text.push_str("{\"conversations\": [\n"); // line 2: invalid JSON
        text.push('\n'); // line 3: blank, ignored
        text.push_str("[1, 2]\n"); // line 4: not an object
        text.push_str(&lines(&[
            json!({"conversations": [{"from": "human", "value": "a"}]}),
        ])); // 5
        text.push_str(&lines(&[json!({"instruction": "a", "output": "b"})])); // 6: other layout
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"{\"id\": \"\xff\"}\n"); // 7: not UTF-8
        bytes.extend_from_slice(lines(&[good]).as_bytes()); // 8
        std::fs::write(&path, bytes).expect("write");

        let d = read_dataset(&path, Format::Auto, OnMalformed::Skip).expect("read");
        assert_eq!(d.conversations.len(), 2);
        assert_eq!(d.conversations[1].id, "chat.jsonl:8");
        assert_eq!(d.malformed, 5);
        let p = path.display();
        let got: Vec<String> = d.malformed_examples.iter().map(|m| m.to_string()).collect();
        assert!(
            got[0].starts_with(&format!("{p}:2: invalid JSON: EOF while parsing")),
            "{}",
            got[0]
        );
        assert_eq!(got[1], format!("{p}:4: the record is not a JSON object"));
        assert_eq!(
            got[2],
            format!("{p}:5: conversations[0]: the conversation ends with the user: the last turn must be the assistant's")
        );
        assert_eq!(got[3], format!("{p}:6: conversations: missing"));
        assert!(
            got[4].starts_with(&format!("{p}:7: not UTF-8")),
            "{}",
            got[4]
        );

        let e = read_dataset(&path, Format::Sharegpt, OnMalformed::Fail).unwrap_err();
        assert!(
            format!("{e:#}").starts_with(&format!("malformed record: {p}:2: invalid JSON")),
            "{e:#}"
        );
    }

    #[test]
    fn compressed_files_and_folders_in_name_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("set");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let rec = |q: &str| json!({"instruction": q, "output": "ok"});
        let mut gz = flate2::write::GzEncoder::new(
            File::create(dir.join("b.jsonl.gz")).expect("create"),
            flate2::Compression::default(),
        );
        gz.write_all(lines(&[rec("b1"), rec("b2")]).as_bytes())
            .expect("gz");
        gz.finish().expect("gz");
        let zst = zstd::encode_all(lines(&[rec("c1")]).as_bytes(), 3).expect("zstd");
        std::fs::write(dir.join("sub/c.jsonl.zst"), zst).expect("write");
        write(&dir.join("a.jsonl"), &lines(&[rec("a1")]));
        write(&dir.join("notes.txt"), "not a dataset");
        write(&dir.join(".hidden.jsonl"), "garbage");

        let d = read_dataset(&dir, Format::Auto, OnMalformed::Fail).expect("read");
        assert_eq!(d.files, 3);
        let got: Vec<(&str, &str)> = d
            .conversations
            .iter()
            .map(|c| (c.id.as_str(), c.messages[0].content.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a.jsonl:1", "a1"),
                ("b.jsonl.gz:1", "b1"),
                ("b.jsonl.gz:2", "b2"),
                ("sub/c.jsonl.zst:1", "c1")
            ]
        );
    }

    #[test]
    fn json_arrays_and_empty_folders_are_errors() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("alpaca.json");
        write(&path, "[{\"instruction\": \"a\", \"output\": \"b\"}]\n");
        let e = read_dataset(&path, Format::Auto, OnMalformed::Skip).unwrap_err();
        assert!(
            format!("{e:#}").contains("alpaca.json:1: a JSON array, not JSON Lines"),
            "{e:#}"
        );
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let e = read_dataset(&empty, Format::Auto, OnMalformed::Skip).unwrap_err();
        assert!(format!("{e:#}").contains("no chat dataset files"), "{e:#}");
    }

    #[test]
    fn parquet_rows_with_nested_turns() {
        // Written by tests/data/make_parquet.py (pyarrow), as HF datasets store ShareGPT sets.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sharegpt.parquet");
        let d = read_dataset(&path, Format::Auto, OnMalformed::Skip).expect("read");
        assert_eq!(d.format, Format::Sharegpt);
        assert_eq!(d.conversations.len(), 2);
        assert_eq!(d.conversations[0].id, "pq-1");
        assert_eq!(
            d.conversations[0].messages,
            [
                Message::new(Role::User, "Was ist größer, ein Elefant oder eine Maus?"),
                Message::new(Role::Assistant, "Ein Elefant."),
                Message::new(Role::User, "Und schwerer?"),
                Message::new(Role::Assistant, "Auch der Elefant.")
            ]
        );
        assert_eq!(d.conversations[1].id, "sharegpt.parquet:3");
        assert_eq!(d.malformed, 1);
        assert_eq!(
            d.malformed_examples[0].to_string(),
            format!(
                "{}: row 2: conversations[1]: a user turn where the assistant should speak (turns must alternate user, assistant)",
                path.display()
            )
        );
    }
}
