//! Datasets as records, the way HF datasets store them on disk.
//!
//! A dataset is a file or a folder of files (read recursively, in name order, dot files
//! skipped): JSON Lines (`.jsonl`, `.json`, `.ndjson`, plain or `.gz`/`.zst` compressed),
//! Parquet, and, where a caller allows it, plain text (`.txt`, one record `{"text": line}` per
//! non-empty line). Every record carries its location (`FILE:LINE`, Parquet `FILE: row N`) and
//! an id (`NAME:LINE`, with NAME relative to the folder) so errors and outputs can cite it.
//!
//! Records are handed over one at a time: a bad record is the caller's decision (skip and
//! count, or fail), a bad file is always an error.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// The kinds of files a dataset may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Jsonl,
    Parquet,
    Text,
}

/// One file of a dataset and the name its record ids cite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFile {
    pub path: PathBuf,
    /// The file's own name, or its path relative to the dataset folder (`/`-separated).
    pub name: String,
    pub kind: FileKind,
}

/// Where a record came from.
#[derive(Debug, Clone)]
pub struct Location {
    /// `FILE:LINE` or `FILE: row N`, with the full path: for messages.
    pub display: String,
    /// `NAME:LINE` or `NAME:ROW`: a stable id for outputs.
    pub id: String,
}

/// What a dataset may contain; `text` allows `.txt` files.
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    pub text: bool,
}

/// The kind of a file by its name, or `None` when it is not a record file.
pub fn kind_of(path: &Path, accept: Accept) -> Option<FileKind> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let base = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .or_else(|| name.strip_suffix(".zstd"))
        .unwrap_or(&name);
    if base.ends_with(".jsonl") || base.ends_with(".json") || base.ends_with(".ndjson") {
        Some(FileKind::Jsonl)
    } else if name.ends_with(".parquet") {
        Some(FileKind::Parquet)
    } else if accept.text && base.ends_with(".txt") {
        Some(FileKind::Text)
    } else {
        None
    }
}

/// A description of the accepted files, for error messages.
pub fn accepted(accept: Accept) -> &'static str {
    if accept.text {
        ".jsonl, .json, .ndjson or .txt, optionally .gz or .zst, or .parquet"
    } else {
        ".jsonl, .json, .ndjson, optionally .gz or .zst, or .parquet"
    }
}

/// The record files of a dataset: `path` itself, or every record file under the folder in name
/// order. `what` names the dataset in errors ("chat dataset").
pub fn discover(path: &Path, accept: Accept, what: &str) -> Result<Vec<RecordFile>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let Some(kind) = kind_of(path, accept) else {
            bail!(
                "{}: not a {what} file ({})",
                path.display(),
                accepted(accept)
            );
        };
        return Ok(vec![RecordFile {
            path: path.to_path_buf(),
            name,
            kind,
        }]);
    }
    let mut files = Vec::new();
    walk(path, &mut files).with_context(|| format!("listing {}", path.display()))?;
    let mut named: Vec<RecordFile> = files
        .into_iter()
        .filter_map(|f| {
            let kind = kind_of(&f, accept)?;
            let rel = f.strip_prefix(path).unwrap_or(&f);
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            Some(RecordFile {
                path: f,
                name,
                kind,
            })
        })
        .collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    if named.is_empty() {
        bail!("{}: no {what} files ({})", path.display(), accepted(accept));
    }
    Ok(named)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Opens a file, decompressing `.gz` and `.zst` by name.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
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

/// Calls `each` with every record of `file`: `Ok(value)`, or `Err(reason)` for a line that is
/// not UTF-8 or not JSON. `each` decides what a bad record means; its error stops the read.
pub fn for_each_record(
    file: &RecordFile,
    mut each: impl FnMut(Result<Value, String>, &Location) -> Result<()>,
) -> Result<()> {
    match file.kind {
        FileKind::Jsonl => jsonl(file, &mut each),
        FileKind::Parquet => parquet(file, &mut each),
        FileKind::Text => text(file, &mut each),
    }
}

fn lines(
    file: &RecordFile,
    each: &mut impl FnMut(&[u8], u64, Location) -> Result<()>,
) -> Result<()> {
    let path = &file.path;
    let mut input = BufReader::new(open_decompressed(path)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("{}:{}: reading", path.display(), line_no + 1))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let location = Location {
            display: format!("{}:{line_no}", path.display()),
            id: format!("{}:{line_no}", file.name),
        };
        each(&buf, line_no, location)?;
    }
}

fn jsonl(
    file: &RecordFile,
    each: &mut impl FnMut(Result<Value, String>, &Location) -> Result<()>,
) -> Result<()> {
    lines(file, &mut |buf, line_no, location| {
        if line_no == 1 && buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            bail!(
                "{}: a JSON array, not JSON Lines (one object per line); convert it, e.g. with `jq -c '.[]'`",
                location.display
            );
        }
        let record = match std::str::from_utf8(buf) {
            Err(e) => Err(format!("not UTF-8 ({e})")),
            Ok(text) => {
                serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"))
            }
        };
        each(record, &location)
    })
}

fn text(
    file: &RecordFile,
    each: &mut impl FnMut(Result<Value, String>, &Location) -> Result<()>,
) -> Result<()> {
    lines(file, &mut |buf, _, location| {
        let record = match std::str::from_utf8(buf) {
            Err(e) => Err(format!("not UTF-8 ({e})")),
            Ok(text) => {
                let mut m = Map::new();
                m.insert("text".into(), Value::String(text.to_string()));
                Ok(Value::Object(m))
            }
        };
        each(record, &location)
    })
}

fn parquet(
    file: &RecordFile,
    each: &mut impl FnMut(Result<Value, String>, &Location) -> Result<()>,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let path = &file.path;
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(f)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: reading rows", path.display()))?;
    for (i, row) in rows.enumerate() {
        let row_no = i + 1;
        let location = Location {
            display: format!("{}: row {row_no}", path.display()),
            id: format!("{}:{row_no}", file.name),
        };
        let row = row.with_context(|| format!("{}: reading", location.display))?;
        each(Ok(row.to_json_value()), &location)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_read_in_name_order_with_locations() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("b"))?;
        std::fs::write(dir.path().join("b/x.jsonl"), "{\"a\": 2}\n\nnot json\n")?;
        std::fs::write(dir.path().join("a.txt"), "eins\n\nzwei\n")?;
        std::fs::write(dir.path().join(".hidden.jsonl"), "{}\n")?;
        std::fs::write(dir.path().join("notes.md"), "skip")?;
        let files = discover(dir.path(), Accept { text: true }, "test")?;
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b/x.jsonl"]);
        let mut seen = Vec::new();
        for f in &files {
            for_each_record(f, |r, loc| {
                seen.push((r.map(|v| v.to_string()), loc.id.clone()));
                Ok(())
            })?;
        }
        assert_eq!(
            seen[0],
            (Ok("{\"text\":\"eins\"}".into()), "a.txt:1".into())
        );
        assert_eq!(
            seen[1],
            (Ok("{\"text\":\"zwei\"}".into()), "a.txt:3".into())
        );
        assert_eq!(seen[2], (Ok("{\"a\":2}".into()), "b/x.jsonl:1".into()));
        assert!(seen[3]
            .0
            .as_ref()
            .is_err_and(|e| e.starts_with("invalid JSON")));
        assert_eq!(seen[3].1, "b/x.jsonl:3");
        // Text files are only records where the caller allows them.
        let err = discover(
            &dir.path().join("a.txt"),
            Accept { text: false },
            "chat dataset",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a chat dataset file"), "{err}");
        Ok(())
    }

    #[test]
    fn a_json_array_is_refused_with_a_hint() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("d.json");
        std::fs::write(&path, "[{\"a\": 1}]\n")?;
        let files = discover(&path, Accept { text: false }, "test")?;
        let err = for_each_record(&files[0], |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("jq -c"), "{err}");
        Ok(())
    }
}
