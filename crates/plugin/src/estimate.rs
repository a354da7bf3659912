//! What a stage will cost, as its plugin estimates it from its params alone (no inputs are read,
//! nothing is downloaded): `leo plan` totals these over a workflow. The plugin knows what its
//! params mean (a model's shape, steps × batch × sequence length); the engine only adds them up
//! and turns FLOPs into GPU-hours at an MFU and a device peak the user states.

use serde::{Deserialize, Serialize};

/// A stage's cost estimate. Every figure is optional: a plugin says what it can know from its
/// params, and [`Estimate::notes`] says why the rest is missing (e.g. "data-dependent").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Tokens the stage processes (for training: forward and backward passes over them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Parameters of the model the stage trains or runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// The dense part of the compute: 6·N·D for training (forward 2·N·D, backward 4·N·D).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_dense: Option<f64>,
    /// The attention scores' part, which 6·N·D leaves out (grows with the sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_attention: Option<f64>,
    /// How `flops_attention` was counted, for the reader (e.g. "6·L·d_attn·seq_len per token").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_formula: Option<String>,
    /// What the stage writes that lasts: checkpoints, outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<StorageItem>,
    /// What is assumed or could not be estimated, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One kind of thing a stage stores: `count` copies of `bytes` each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageItem {
    /// What it is, e.g. "checkpoints (f32 weights + AdamW moments, 12 B/param)".
    pub what: String,
    /// Bytes of one copy.
    pub bytes: u64,
    /// How many copies the stage keeps (checkpoints: one per `checkpoint_every`).
    pub count: u64,
}

impl StorageItem {
    pub fn total(&self) -> u64 {
        self.bytes.saturating_mul(self.count)
    }
}

impl Estimate {
    /// Dense plus attention FLOPs, when the dense part is known.
    pub fn flops(&self) -> Option<f64> {
        self.flops_dense
            .map(|d| d + self.flops_attention.unwrap_or(0.0))
    }

    /// Bytes of everything in [`Estimate::storage`].
    pub fn storage_bytes(&self) -> u64 {
        self.storage
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.total()))
    }

    /// Nothing estimated and nothing said: the plugin has no estimate to give.
    pub fn is_empty(&self) -> bool {
        *self == Estimate::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_round_trips_and_omits_what_it_does_not_know() {
        let e = Estimate {
            tokens: Some(10),
            flops_dense: Some(60.0),
            flops_attention: Some(6.0),
            storage: vec![StorageItem {
                what: "checkpoints".into(),
                bytes: 12,
                count: 3,
            }],
            ..Estimate::default()
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("parameters"), "{text}");
        assert_eq!(serde_json::from_str::<Estimate>(&text).unwrap(), e);
        assert_eq!(e.flops(), Some(66.0));
        assert_eq!(e.storage_bytes(), 36);
        assert!(Estimate::default().is_empty());
    }
}
