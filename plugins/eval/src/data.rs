//! A task's documents: the records of one split of its dataset input.
//!
//! The input is a folder in the layouts HF datasets use: `SPLIT.jsonl`, `SPLIT-00000-of-00001.parquet`,
//! `data/SPLIT-*.parquet`, or a `SPLIT/` folder of files; or a single file, which is the test
//! split (a held-out text for perplexity, say). Documents keep file and line order: few-shot
//! sampling and `limit` depend on it, as in lm-eval.

use std::path::Path;

use anyhow::{bail, Result};
use leo_records::{Accept, RecordFile};
use serde_json::Value;

use crate::template::Doc;

/// The documents of `split`; `None` when a single-file dataset is asked for another split than
/// the test split.
pub fn load_split(dataset: &Path, split: &str, is_test_split: bool) -> Result<Vec<Doc>> {
    let accept = Accept { text: true };
    let files: Vec<RecordFile> = if dataset.is_file() {
        if !is_test_split {
            bail!(
                "{}: a single file is the test split only; the `{split}` split needs a folder with {split}.jsonl (or {split}-*.parquet)",
                dataset.display()
            );
        }
        leo_records::discover(dataset, accept, "dataset")?
    } else {
        let all = leo_records::discover(dataset, accept, "dataset")?;
        let names: Vec<String> = all.iter().map(|f| f.name.clone()).collect();
        let picked: Vec<RecordFile> = all
            .into_iter()
            .filter(|f| in_split(&f.name, split))
            .collect();
        if picked.is_empty() {
            bail!(
                "{}: no files of the `{split}` split (expected {split}.jsonl, {split}-*.parquet or {split}/…; found {})",
                dataset.display(),
                names.join(", ")
            );
        }
        picked
    };
    let mut docs = Vec::new();
    for file in &files {
        leo_records::for_each_record(file, |record, location| match record {
            Ok(Value::Object(doc)) => {
                docs.push(doc);
                Ok(())
            }
            Ok(_) => bail!("{}: the record is not a JSON object", location.display),
            Err(reason) => bail!("{}: {reason}", location.display),
        })?;
    }
    if docs.is_empty() {
        bail!(
            "{}: the `{split}` split has no documents",
            dataset.display()
        );
    }
    Ok(docs)
}

/// Whether a file (path relative to the dataset folder) belongs to `split`.
fn in_split(name: &str, split: &str) -> bool {
    let mut parts: Vec<&str> = name.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    if parts.contains(&split) {
        return true;
    }
    let stem = file.split('.').next().unwrap_or_default();
    stem == split
        || stem
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_files_in_hf_layouts() {
        assert!(in_split("test.jsonl", "test"));
        assert!(in_split("data/test-00000-of-00001.parquet", "test"));
        assert!(in_split("test/part-1.jsonl.zst", "test"));
        assert!(!in_split("validation.jsonl", "test"));
        assert!(!in_split("testing.jsonl", "test"));
        assert!(in_split("dev.jsonl", "dev"));
    }
}
