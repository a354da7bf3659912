//! Reading documents from many files, streaming: OSCAR 23.01 and 22.01 JSONL, the HF view
//! of OSCAR (`text` + `meta`), plain JSONL with a configurable text field, plain text, and
//! Parquet; `.gz` and `.zst` compressed or not. Files come in sorted order and are read in
//! batches of lines, so documents get the same global order on every run.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use crate::config::{Config, Format, TextUnit};
use crate::doc::Doc;

/// One input file and the name documents cite (relative to its input).
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub name: String,
}

/// Every readable file under the given inputs (files or folders), sorted by name.
pub fn discover(inputs: &[(String, PathBuf)]) -> Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for (input, path) in inputs {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("input `{input}`: {}", path.display()))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map_or_else(|| input.clone(), |n| n.to_string_lossy().into_owned());
            out.push(InputFile {
                path: path.clone(),
                name: format!("{input}/{name}"),
            });
            continue;
        }
        let mut files = Vec::new();
        walk(path, &mut files)
            .with_context(|| format!("listing input `{input}` at {}", path.display()))?;
        files.sort();
        for file in files {
            if kind_of(&file).is_none() {
                continue;
            }
            let rel = file
                .strip_prefix(path)
                .unwrap_or(&file)
                .to_string_lossy()
                .into_owned();
            out.push(InputFile {
                path: file,
                name: format!("{input}/{rel}"),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Jsonl,
    Text,
    Parquet,
}

/// The kind of a file from its name, compression suffixes aside.
pub fn kind_of(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let base = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .or_else(|| name.strip_suffix(".zstd"))
        .unwrap_or(&name);
    if base.ends_with(".jsonl") || base.ends_with(".json") || base.ends_with(".ndjson") {
        Some(FileKind::Jsonl)
    } else if base.ends_with(".txt") || base.ends_with(".text") {
        Some(FileKind::Text)
    } else if base.ends_with(".parquet") {
        Some(FileKind::Parquet)
    } else {
        None
    }
}

fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.to_string_lossy().to_lowercase();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(zstd::Decoder::new(file).with_context(|| format!("reading {}", path.display()))?)
    } else {
        Box::new(file)
    })
}

/// A batch of raw records of one file: text lines (JSONL or plain text) or parsed rows.
pub struct Batch {
    pub file: usize,
    pub first_line: u64,
    pub records: Records,
}

pub enum Records {
    /// Lines without their newline; `Err` for a line that is not UTF-8.
    Lines(Vec<Result<String, String>>),
    /// Whole documents of a text file (`text_unit = file | paragraph`), with their lines.
    Texts(Vec<(u64, String)>),
    Rows(Vec<Value>),
}

/// Streams batches of about `batch_bytes` from every file in order.
pub struct Batches<'a> {
    files: &'a [InputFile],
    config: &'a Config,
    batch_bytes: usize,
    current: Option<(usize, Source)>,
    next_file: usize,
}

enum Source {
    Lines {
        reader: Box<dyn BufRead + Send>,
        line: u64,
    },
    Done,
}

impl<'a> Batches<'a> {
    pub fn new(files: &'a [InputFile], config: &'a Config, batch_bytes: usize) -> Batches<'a> {
        Batches {
            files,
            config,
            batch_bytes,
            current: None,
            next_file: 0,
        }
    }

    fn open(&mut self, index: usize) -> Result<Option<Batch>> {
        let file = &self.files[index];
        let kind = kind_of(&file.path).unwrap_or(FileKind::Jsonl);
        let forced = match self.config.format {
            Format::Text => Some(FileKind::Text),
            Format::Parquet => Some(FileKind::Parquet),
            Format::Auto => None,
            _ => Some(FileKind::Jsonl),
        };
        match forced.unwrap_or(kind) {
            FileKind::Parquet => Ok(Some(Batch {
                file: index,
                first_line: 1,
                records: Records::Rows(read_parquet(&file.path)?),
            })),
            FileKind::Text if self.config.text_unit != TextUnit::Line => {
                let mut text = String::new();
                open_decompressed(&file.path)?
                    .read_to_string(&mut text)
                    .with_context(|| format!("reading {} (as UTF-8 text)", file.name))?;
                let texts = match self.config.text_unit {
                    TextUnit::Paragraph => paragraphs(&text),
                    _ => vec![(1, text)],
                };
                Ok(Some(Batch {
                    file: index,
                    first_line: 1,
                    records: Records::Texts(texts),
                }))
            }
            _ => {
                let reader = BufReader::with_capacity(1 << 20, open_decompressed(&file.path)?);
                self.current = Some((
                    index,
                    Source::Lines {
                        reader: Box::new(reader),
                        line: 0,
                    },
                ));
                Ok(None)
            }
        }
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            if let Some((index, Source::Lines { reader, line })) = &mut self.current {
                let mut lines = Vec::new();
                let mut bytes = 0;
                let first_line = *line + 1;
                let mut buf = Vec::new();
                while bytes < self.batch_bytes {
                    buf.clear();
                    let n = reader.read_until(b'\n', &mut buf).with_context(|| {
                        format!("reading {} after line {line}", self.files[*index].name)
                    })?;
                    if n == 0 {
                        break;
                    }
                    *line += 1;
                    bytes += n;
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    lines.push(String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
                        format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())
                    }));
                }
                let file = *index;
                if lines.is_empty() {
                    self.current = Some((file, Source::Done));
                } else {
                    return Ok(Some(Batch {
                        file,
                        first_line,
                        records: Records::Lines(lines),
                    }));
                }
            }
            self.current = None;
            if self.next_file >= self.files.len() {
                return Ok(None);
            }
            let index = self.next_file;
            self.next_file += 1;
            if let Some(batch) = self.open(index)? {
                return Ok(Some(batch));
            }
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

fn paragraphs(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            start = i as u64 + 2;
        } else {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

fn read_parquet(path: &Path) -> Result<Vec<Value>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let mut rows = Vec::new();
    for row in reader
        .get_row_iter(None)
        .with_context(|| format!("reading rows of {}", path.display()))?
    {
        let row = row.with_context(|| format!("reading a row of {}", path.display()))?;
        rows.push(row.to_json_value());
    }
    Ok(rows)
}

/// Turns one raw record into a document, by the configured or detected layout.
/// `Err` is a malformed record (the message says why).
pub fn record_to_doc(record: Value, config: &Config, file: &str, line: u64) -> Result<Doc, String> {
    let Value::Object(mut obj) = record else {
        return Err("the record is not a JSON object".into());
    };
    let layout = match config.format {
        Format::Oscar => Format::Oscar,
        Format::Hf => Format::Hf,
        Format::Auto if obj.contains_key("content") || obj.contains_key("warc_headers") => {
            Format::Oscar
        }
        Format::Auto
            if obj.get("meta").is_some_and(Value::is_object) && obj.contains_key("text") =>
        {
            Format::Hf
        }
        _ => Format::Jsonl,
    };
    let fallback_id = || format!("{file}:{line}");
    match layout {
        Format::Oscar => {
            let text = take_text(&mut obj, "content")?;
            let mut meta = match obj.remove("metadata") {
                Some(Value::Object(m)) => m,
                Some(Value::Null) | None => Map::new(),
                Some(_) => return Err("`metadata` is not an object".into()),
            };
            upgrade_oscar_2201(&mut meta);
            let headers = obj.remove("warc_headers").unwrap_or(Value::Null);
            let id = warc_record_id(&headers).unwrap_or_else(fallback_id);
            meta.insert("warc_headers".into(), headers);
            Ok(Doc::new(id, text, meta, file.to_string(), line))
        }
        Format::Hf => {
            let text = take_text(&mut obj, "text")?;
            let mut meta = match obj.remove("meta") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            upgrade_oscar_2201(&mut meta);
            let id = match obj.remove(&config.id_field) {
                Some(v) => id_string(v),
                None => meta
                    .get("warc_headers")
                    .and_then(warc_record_id)
                    .unwrap_or_else(fallback_id),
            };
            Ok(Doc::new(id, text, meta, file.to_string(), line))
        }
        _ => {
            let text = take_text(&mut obj, &config.text_field)?;
            let id = obj
                .remove(&config.id_field)
                .map(id_string)
                .unwrap_or_else(fallback_id);
            Ok(Doc::new(id, text, obj, file.to_string(), line))
        }
    }
}

/// `<urn:uuid:…>` → `urn:uuid:…`.
fn warc_record_id(headers: &Value) -> Option<String> {
    headers
        .get("warc-record-id")
        .and_then(Value::as_str)
        .map(|s| s.trim_matches(['<', '>']).to_string())
}

fn take_text(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "`{field}` is not a string but {}",
            leo_plugin::kind(&other)
        )),
        None => Err(format!("no `{field}` field")),
    }
}

fn id_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// OSCAR 22.01 keeps its warnings in `annotation` (`tiny`, `short_sentences`, `header`,
/// `footer`, `noisy`, `adult`); 23.01 split them into `quality_warnings` and `categories`.
fn upgrade_oscar_2201(meta: &mut Map<String, Value>) {
    if meta.contains_key("quality_warnings") {
        return;
    }
    let Some(Value::Array(annotation)) = meta.get("annotation").cloned() else {
        return;
    };
    let (adult, warnings): (Vec<Value>, Vec<Value>) = annotation
        .into_iter()
        .partition(|a| a.as_str() == Some("adult"));
    meta.insert("quality_warnings".into(), Value::Array(warnings));
    if !adult.is_empty() && !meta.contains_key("categories") {
        meta.insert(
            "categories".into(),
            Value::Array(vec![Value::from("adult")]),
        );
    }
}

/// Reads the single text of a document from a batch entry.
pub fn text_doc(text: String, file: &str, line: u64) -> Doc {
    Doc::new(
        format!("{file}:{line}"),
        text,
        Map::new(),
        file.to_string(),
        line,
    )
}

/// Checks that an input path holds at least one readable file.
pub fn ensure_inputs(files: &[InputFile]) -> Result<()> {
    if files.is_empty() {
        bail!("no input files (.jsonl, .json, .txt, .parquet, optionally .gz or .zst) in the stage's inputs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oscar_2301_records() {
        let rec = json!({
            "content": "Hallo Welt\nZweite Zeile",
            "warc_headers": {"warc-record-id": "<urn:uuid:1234>", "warc-target-uri": "https://example.de/"},
            "metadata": {"identification": {"label": "de", "prob": 0.98}, "harmful_pp": 312.5,
                          "quality_warnings": ["short_sentences"], "categories": null, "tlsh": "t1..."}
        });
        let d = record_to_doc(rec, &Config::default(), "in/a.jsonl", 3).unwrap();
        assert_eq!(d.id, "urn:uuid:1234");
        assert_eq!(d.text, "Hallo Welt\nZweite Zeile");
        assert_eq!(d.meta["identification"]["label"], "de");
        assert_eq!(
            d.meta["warc_headers"]["warc-target-uri"],
            "https://example.de/"
        );
    }

    #[test]
    fn oscar_2201_annotations_become_warnings() {
        let rec = json!({"content": "x", "warc_headers": {"warc-record-id": "<urn:uuid:9>"},
                         "metadata": {"identification": {"label": "de", "prob": 0.9},
                                      "annotation": ["tiny", "adult"], "sentence_identifications": []}});
        let d = record_to_doc(rec, &Config::default(), "f", 1).unwrap();
        assert_eq!(d.meta["quality_warnings"], json!(["tiny"]));
        assert_eq!(d.meta["categories"], json!(["adult"]));
    }

    #[test]
    fn hf_and_plain_records() {
        let d = record_to_doc(
            json!({"id": 7, "text": "t", "meta": {"harmful_pp": 1.0}}),
            &Config::default(),
            "f",
            1,
        )
        .unwrap();
        assert_eq!(
            (d.id.as_str(), d.meta["harmful_pp"].as_f64()),
            ("7", Some(1.0))
        );
        let cfg = Config {
            text_field: "body".into(),
            ..Default::default()
        };
        let d = record_to_doc(json!({"body": "b", "source": "x"}), &cfg, "f", 9).unwrap();
        assert_eq!(
            (d.id.as_str(), d.meta["source"].as_str()),
            ("f:9", Some("x"))
        );
        assert_eq!(
            record_to_doc(json!({"text": 1}), &Config::default(), "f", 1).unwrap_err(),
            "`text` is not a string but an integer"
        );
        assert!(record_to_doc(json!([1]), &Config::default(), "f", 1).is_err());
    }

    #[test]
    fn paragraphs_keep_their_first_line() {
        assert_eq!(
            paragraphs("a\nb\n\n\nc\n"),
            vec![(1, "a\nb".to_string()), (5, "c".to_string())]
        );
    }
}
