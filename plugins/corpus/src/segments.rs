//! The stage's intermediate results on disk, in segments that never change once closed, so a
//! checkpoint is a set of hard links plus a progress record, and a killed stage continues from
//! its last checkpoint instead of from the first document.
//!
//! A segment holds, for the documents that passed the filters while it was open: their JSON
//! lines (`kept.jsonl.zst`), their text lengths (`lens.bin`) and their dedup keys (`dedup/`).
//! A checkpoint `step-N/` (N = input batches done) holds `progress.json` and a link to every
//! closed segment.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::dedup::Spill;
use crate::pipeline::Stats;

pub struct SegmentWriter {
    dir: PathBuf,
    kept: zstd::Encoder<'static, BufWriter<File>>,
    lens: BufWriter<File>,
    spill: Spill,
}

impl SegmentWriter {
    pub fn create(dir: &Path, exact: bool, buckets: usize) -> Result<SegmentWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let create = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            kept: zstd::Encoder::new(create("kept.jsonl.zst")?, 1)?,
            lens: create("lens.bin")?,
            spill: Spill::create(&dir.join("dedup"), exact, buckets)?,
        })
    }

    pub fn add(
        &mut self,
        index: u32,
        line: &str,
        text_bytes: u32,
        exact: u128,
        buckets: Option<&[u128]>,
    ) -> Result<()> {
        self.kept.write_all(line.as_bytes())?;
        self.kept.write_all(b"\n")?;
        self.lens.write_all(&text_bytes.to_le_bytes())?;
        self.spill.add(index, exact, buckets)
    }

    /// Flushes everything; the segment's files are final from here on.
    pub fn close(self) -> Result<PathBuf> {
        let ctx = || format!("closing segment {}", self.dir.display());
        self.kept
            .finish()
            .with_context(ctx)?
            .flush()
            .with_context(ctx)?;
        let mut lens = self.lens;
        lens.flush().with_context(ctx)?;
        self.spill.finish().with_context(ctx)?;
        Ok(self.dir)
    }
}

/// What a checkpoint records besides its segments.
#[derive(Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Input batches consumed; a resumed stage skips this many.
    pub batches: u64,
    /// Documents that passed the filters (the next document's index).
    pub kept: u32,
    pub stats: Stats,
    /// Segment folder names, in order.
    pub segments: Vec<String>,
    /// The params the checkpoint was made with; resuming with others starts over.
    pub config: serde_json::Value,
}

/// Writes `checkpoint_dir/step-N/` with links to `segments` and `progress.json`.
pub fn write_checkpoint(
    checkpoint_dir: &Path,
    segments: &[PathBuf],
    progress: &Progress,
) -> Result<PathBuf> {
    let dir = checkpoint_dir.join(format!("step-{}", progress.batches));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    for (segment, name) in segments.iter().zip(&progress.segments) {
        link_tree(segment, &dir.join(name))?;
    }
    let path = dir.join("progress.json");
    std::fs::write(&path, serde_json::to_vec_pretty(progress)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(dir)
}

pub fn read_checkpoint(dir: &Path) -> Result<(Progress, Vec<PathBuf>)> {
    let path = dir.join("progress.json");
    let progress: Progress = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let segments = progress.segments.iter().map(|s| dir.join(s)).collect();
    Ok((progress, segments))
}

/// Hard-links (or, across file systems, copies) every file of `from` into `to`.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}
