//! Training checkpoints: everything a resumed run needs to continue bit for bit.
//!
//! ```text
//! CHECKPOINT_DIR/step-N/
//!   model/                         the weights as an HF checkpoint (f32, transformers loads it)
//!   optimizer/rank-R-of-W.safetensors   each rank's AdamW moments (its ZeRO-1 chunk)
//!   trainer.json                   step, samples consumed, world size, parameter layout,
//!                                  loss scale, the training params
//!   COMPLETE                       written last
//! CHECKPOINT_DIR/latest            "step-N", replaced atomically after COMPLETE
//! ```
//!
//! Files first, then the completion marker, then the pointer: a crash in the middle of a save
//! leaves a folder without `COMPLETE`, which [`TrainerState::load`] refuses, and `latest` still
//! names the previous checkpoint. Training draws no random numbers after initialisation (no
//! dropout in Llama; the data order is a function of seed and epoch), so the step and the
//! samples consumed are the whole random state.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::zero::ParamSlot;

pub const COMPLETE: &str = "COMPLETE";
pub const TRAINER_STATE: &str = "trainer.json";
pub const LATEST: &str = "latest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Optimizer updates done.
    pub step: u64,
    /// Global sample index the next step starts at.
    pub samples_consumed: u64,
    pub world_size: usize,
    pub loss_scale: f64,
    pub layout: Vec<ParamSlot>,
    /// The params the run was started with (for the record and for checks on resume).
    pub params: serde_json::Value,
}

impl TrainerState {
    pub const FORMAT: u32 = 1;

    /// Reads `dir/trainer.json`, refusing a folder whose save never completed.
    pub fn load(dir: &Path) -> Result<TrainerState> {
        ensure!(
            dir.join(COMPLETE).is_file(),
            "{} is not a complete checkpoint (no {COMPLETE} marker: its save was interrupted)",
            dir.display()
        );
        let path = dir.join(TRAINER_STATE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: TrainerState =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if state.format != Self::FORMAT {
            bail!(
                "{}: checkpoint format {} (this leo reads {})",
                path.display(),
                state.format,
                Self::FORMAT
            );
        }
        Ok(state)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_synced(
            &dir.join(TRAINER_STATE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }
}

/// The folder of the checkpoint after `step` updates.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step}"))
}

/// Marks `dir` complete, then points `root/latest` at it (write + rename: never half a name).
pub fn commit(root: &Path, dir: &Path) -> Result<()> {
    write_synced(&dir.join(COMPLETE), b"")?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable name", dir.display()))?;
    let tmp = root.join(format!("{LATEST}.tmp"));
    write_synced(&tmp, name.as_bytes())?;
    std::fs::rename(&tmp, root.join(LATEST))
        .with_context(|| format!("updating {}", root.join(LATEST).display()))?;
    sync_dir(root)
}

/// The checkpoint `root/latest` names, when there is a complete one.
pub fn latest(root: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(root.join(LATEST)).ok()?;
    let dir = root.join(name.trim());
    dir.join(COMPLETE).is_file().then_some(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainerState {
        TrainerState {
            format: TrainerState::FORMAT,
            step: 4,
            samples_consumed: 32,
            world_size: 2,
            loss_scale: 1.0,
            layout: vec![],
            params: serde_json::json!({"lr": 1e-3}),
        }
    }

    #[test]
    fn only_committed_checkpoints_count() {
        let root = tempfile::tempdir().unwrap();
        let dir = step_dir(root.path(), 4);
        std::fs::create_dir_all(&dir).unwrap();
        state().write(&dir).unwrap();
        // Files are there but the save did not finish.
        assert!(TrainerState::load(&dir)
            .unwrap_err()
            .to_string()
            .contains("interrupted"));
        assert_eq!(latest(root.path()), None);
        commit(root.path(), &dir).unwrap();
        assert_eq!(TrainerState::load(&dir).unwrap(), state());
        assert_eq!(latest(root.path()), Some(dir.clone()));
        // A later save that dies before its marker leaves `latest` where it was.
        let next = step_dir(root.path(), 8);
        std::fs::create_dir_all(&next).unwrap();
        state().write(&next).unwrap();
        assert_eq!(latest(root.path()), Some(dir));
    }
}
