//! Where things are in a workflow file: byte offsets to `line:column`, key paths to spans.

use std::fmt;
use std::path::{Path, PathBuf};

/// One actionable error: `FILE:LINE:COL: FIELD: MESSAGE`, always on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `stages.train.params.lr`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message.replace('\n', " ");
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            message.trim()
        )
    }
}

/// The text of a workflow file, kept to locate errors found after parsing.
#[derive(Debug, Clone)]
pub struct Source {
    file: PathBuf,
    text: String,
    doc: Option<toml_edit::Document<String>>,
}

impl Source {
    pub fn new(file: impl AsRef<Path>, text: String) -> Self {
        let doc = toml_edit::Document::parse(text.clone()).ok();
        Source {
            file: file.as_ref().to_path_buf(),
            text,
            doc,
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// An error at a byte offset.
    pub fn error_at_offset(
        &self,
        offset: usize,
        field: &str,
        message: impl Into<String>,
    ) -> SpecError {
        let (line, column) = self.line_col(offset);
        SpecError {
            file: self.file.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// An error at a key path (`["stages", "a", "params", "lr"]`). Points at the deepest part of
    /// the path that exists in the file: the key itself, else its closest parent.
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> SpecError {
        let offset = self.offset_of(path).unwrap_or(0);
        self.error_at_offset(offset, &path.join("."), message)
    }

    /// Byte offset of the key at `path`, or of its closest existing parent.
    pub fn offset_of(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut best = None;
        for segment in path {
            let Some((key, item)) = table.get_key_value(segment) else {
                break;
            };
            if let Some(span) = key.span().or_else(|| item.span()) {
                best = Some(span.start);
            }
            match item {
                toml_edit::Item::Table(t) => table = t,
                toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => table = t,
                _ => break,
            }
        }
        best
    }

    /// The dotted key path whose key or value contains `offset`, as precisely as the file allows.
    pub fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        walk(doc.as_table(), offset, &mut path);
        if path.is_empty() {
            None
        } else {
            Some(path.join("."))
        }
    }
}

fn walk(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) {
    for (name, item) in table.iter() {
        let Some((key, _)) = table.get_key_value(name) else {
            continue;
        };
        let in_key = key.span().is_some_and(|s| s.contains(&offset));
        let in_item = item
            .span()
            .is_some_and(|s| s.contains(&offset) || s.end == offset);
        let child: Option<&dyn toml_edit::TableLike> = match item {
            toml_edit::Item::Table(t) => Some(t),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => Some(t),
            _ => None,
        };
        if in_key || in_item {
            path.push(name.to_string());
            if let Some(child) = child {
                walk(child, offset, path);
            }
            return;
        }
        // Header tables (`[stages.a]`) have no span covering their body: look inside.
        if let Some(child) = child {
            let before = path.len();
            path.push(name.to_string());
            walk(child, offset, path);
            if path.len() > before + 1 {
                return;
            }
            path.truncate(before);
        }
    }
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbä c", 0), (1, 1));
        assert_eq!(line_col("a\nbä c", 2), (2, 1));
        // 'ä' is two bytes but one column.
        assert_eq!(line_col("a\nbä c", 5), (2, 3));
    }

    #[test]
    fn offsets_and_paths_of_keys() {
        let text =
            "[workflow]\nname = \"x\"\n\n[stages.a]\nplugin = \"shell\"\nparams = { run = 1 }\n";
        let src = Source::new("w.toml", text.to_string());
        let off = src.offset_of(&["stages", "a", "params", "run"]).unwrap();
        assert_eq!(src.line_col(off), (6, 12));
        assert_eq!(src.path_at(off).as_deref(), Some("stages.a.params.run"));
        let plugin = src.offset_of(&["stages", "a", "plugin"]).unwrap();
        assert_eq!(src.line_col(plugin), (5, 1));
        // A missing key falls back to its parent.
        let missing = src.offset_of(&["stages", "a", "nope"]).unwrap();
        assert_eq!(src.line_col(missing), (4, 9));
        let err = src.error_at(&["stages", "a", "params", "run"], "must be a string");
        assert_eq!(
            err.to_string(),
            "w.toml:6:12: stages.a.params.run: must be a string"
        );
    }
}
