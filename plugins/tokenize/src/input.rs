//! Reading JSONL documents: plain, zstd or gzip files (by their first bytes), one JSON object
//! per line, read on a thread of its own in batches while the previous batch is tokenized.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// File names a documents folder is searched for.
pub const EXTENSIONS: &[&str] = &[".jsonl", ".jsonl.zst", ".jsonl.gz"];

/// One input file: its path and the name documents without an id are known by.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// Relative to the input (the file name for a single file): ids never contain where the
    /// input happened to be materialised.
    pub name: String,
}

/// The files of the `documents` input in a fixed order: the file itself, or every
/// `*.jsonl{,.zst,.gz}` under the folder, sorted by relative path.
pub fn discover(root: &Path) -> Result<Vec<InputFile>> {
    let meta = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![InputFile {
            path: root.to_path_buf(),
            name,
        }]);
    }
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if files.is_empty() {
        bail!(
            "{}: no documents ({} files) in the folder",
            root.display(),
            EXTENSIONS.join(", ")
        );
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<InputFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        if is_dir {
            walk(root, &path, out)?;
            continue;
        }
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if EXTENSIONS.iter().any(|e| name.ends_with(e)) {
            out.push(InputFile { path, name });
        }
    }
    Ok(())
}

/// Opens a file, decompressing zstd or gzip as its magic bytes say.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n =
        read_up_to(&mut file, &mut magic).with_context(|| format!("reading {}", path.display()))?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(match &magic[..n] {
        [0x28, 0xB5, 0x2F, 0xFD] => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::Decoder::new(file).with_context(|| format!("opening {}", path.display()))?,
        )),
        [0x1F, 0x8B, ..] => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        )),
        _ => Box::new(BufReader::with_capacity(1 << 20, file)),
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A raw line and where it came from.
pub struct Line {
    pub file: usize,
    /// 1-based.
    pub line: u64,
    pub bytes: Vec<u8>,
}

/// Reads all files on a thread, sending batches of about `batch_bytes` (bounded: at most two
/// batches wait). An I/O error ends the stream with that error.
pub fn batches(files: Vec<InputFile>, batch_bytes: usize) -> Receiver<Result<Vec<Line>>> {
    let (tx, rx) = sync_channel(1);
    std::thread::spawn(move || {
        let mut batch = Vec::new();
        let mut size = 0;
        for (f, file) in files.iter().enumerate() {
            let mut reader = match open(&file.path) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut line_no = 0u64;
            loop {
                let mut bytes = Vec::new();
                match reader.read_until(b'\n', &mut bytes) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let e = anyhow::Error::new(e)
                            .context(format!("reading {} after line {line_no}", file.name));
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                line_no += 1;
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                size += bytes.len();
                batch.push(Line {
                    file: f,
                    line: line_no,
                    bytes,
                });
                if size >= batch_bytes {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                    size = 0;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(Ok(batch));
        }
    });
    rx
}

/// A parsed document.
pub struct Doc {
    pub id: String,
    pub text: String,
}

/// Parses one JSONL line; `Err` says why the line is malformed.
pub fn parse(
    line: &Line,
    files: &[InputFile],
    text_field: &str,
    id_field: &str,
) -> std::result::Result<Doc, String> {
    let value: Value = serde_json::from_slice(&line.bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("not a JSON object".into());
    };
    let text = match obj.remove(text_field) {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(format!(
                "field `{text_field}` is {}, not a string",
                leo_plugin::kind(&other)
            ))
        }
        None => return Err(format!("no `{text_field}` field")),
    };
    let id = match obj.get(id_field) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => format!("{}:{}", files[line.file].name, line.line),
        Some(other) => other.to_string(),
    };
    Ok(Doc { id, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_zstd_and_gzip_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let body = b"{\"id\": \"a\", \"text\": \"x\"}\n\n{\"text\": \"y\"}\n";
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("b.jsonl"), body).unwrap();
        std::fs::write(
            tmp.path().join("sub/c.jsonl.zst"),
            zstd::encode_all(&body[..], 3).unwrap(),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        std::fs::write(tmp.path().join("a.jsonl.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "ignored").unwrap();
        let files = discover(tmp.path()).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.jsonl.gz", "b.jsonl", "sub/c.jsonl.zst"]);
        let lines: Vec<Line> = batches(files.clone(), 10)
            .into_iter()
            .flat_map(|b| b.unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        let docs: Vec<Doc> = lines
            .iter()
            .map(|l| parse(l, &files, "text", "id").unwrap())
            .collect();
        assert_eq!(docs[0].id, "a");
        assert_eq!(docs[1].id, "a.jsonl.gz:3");
        assert_eq!(docs[5].id, "sub/c.jsonl.zst:3");
        assert_eq!(docs[5].text, "y");
    }

    #[test]
    fn malformed_lines_say_why() {
        let files = vec![InputFile {
            path: "x".into(),
            name: "x".into(),
        }];
        let line = |s: &str| Line {
            file: 0,
            line: 1,
            bytes: s.as_bytes().to_vec(),
        };
        let err = |s: &str| parse(&line(s), &files, "text", "id").err().unwrap();
        assert!(err("{\"text\": ").starts_with("not JSON"));
        assert_eq!(err("[1]"), "not a JSON object");
        assert_eq!(err("{\"body\": \"x\"}"), "no `text` field");
        assert_eq!(
            err("{\"text\": 3}"),
            "field `text` is an integer, not a string"
        );
        assert_eq!(
            parse(&line("{\"text\": \"t\", \"id\": 7}"), &files, "text", "id")
                .unwrap()
                .id,
            "7"
        );
    }
}
