//! The training params shared by the `pretrain` and `sft` stages, with the defaults a user of
//! the LeoLM recipe expects (stage-2 values from LEOLM.md where published).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::schedule::{Decay, Schedule};

/// Numeric precision of the forward and backward passes. Weights, gradients and optimizer state
/// stay f32 (master weights); bf16/fp16 autocast the matrix multiplications on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 on CUDA, f32 on the CPU.
    #[default]
    Auto,
    F32,
    Bf16,
    /// fp16 with dynamic loss scaling.
    Fp16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when available, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Optimizer updates in total.
    pub steps: u64,
    /// Rows per forward pass on each rank.
    pub micro_batch: usize,
    /// Rows per update over all ranks; must be micro_batch × world size × an integer (the
    /// gradient accumulation steps). Default: micro_batch × world size.
    pub global_batch: Option<usize>,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
    pub beta1: f64,
    pub beta2: f64,
    /// Not published for LeoLM: PyTorch's default.
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient norm clipping; none to switch off. Not published for LeoLM: 1.0, the
    /// HF Trainer's and DeepSpeed configs' usual value.
    pub max_grad_norm: Option<f64>,
    pub precision: Precision,
    pub device: DeviceChoice,
    /// Recompute each layer's activations in the backward pass instead of keeping them
    /// (activation checkpointing): memory for one layer's activations at a time, ~1/3 more compute.
    pub recompute: bool,
    /// Save a checkpoint every N updates (0: only at the end and on SIGTERM).
    pub checkpoint_every: u64,
    /// Validation every N updates (0: only at the end).
    pub eval_every: u64,
    /// Micro-batches of validation rows per evaluation (over all ranks).
    pub eval_batches: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Train on the first N rows only (one batch, to check that the model can overfit it).
    pub train_rows: Option<u64>,
    /// CPU threads per rank for libtorch (default: libtorch's choice).
    pub threads: Option<i32>,
    /// Peak dense FLOP/s of one device in TFLOP/s, for the MFU estimate; detected for known
    /// NVIDIA GPUs.
    pub peak_tflops: Option<f64>,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            steps: 100,
            micro_batch: 1,
            global_batch: None,
            lr: 2e-5,
            min_lr: 2e-6,
            warmup_steps: 0,
            decay: Decay::Cosine,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
            max_grad_norm: Some(1.0),
            precision: Precision::Auto,
            device: DeviceChoice::Auto,
            recompute: false,
            checkpoint_every: 0,
            eval_every: 0,
            eval_batches: 4,
            seed: 0,
            shuffle: true,
            train_rows: None,
            threads: None,
            peak_tflops: None,
        }
    }
}

impl TrainParams {
    /// Checks what serde cannot; errors name the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if self.steps == 0 {
            return err("steps", "must be at least 1".into());
        }
        if self.micro_batch == 0 {
            return err("micro_batch", "must be at least 1".into());
        }
        if let Some(g) = self.global_batch {
            if g == 0 || g % self.micro_batch != 0 {
                return err(
                    "global_batch",
                    format!(
                        "must be a positive multiple of micro_batch ({})",
                        self.micro_batch
                    ),
                );
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return err("lr", format!("must be a positive number, got {}", self.lr));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return err("min_lr", format!("must be between 0 and lr ({})", self.lr));
        }
        for (f, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return err(f, format!("must be in [0, 1), got {b}"));
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return err("eps", "must be positive".into());
        }
        if self.weight_decay < 0.0 {
            return err("weight_decay", "must not be negative".into());
        }
        if let Some(m) = self.max_grad_norm {
            if m.is_nan() || m <= 0.0 {
                return err("max_grad_norm", "must be positive (or left out)".into());
            }
        }
        if self.warmup_steps > self.steps {
            return err(
                "warmup_steps",
                format!("is more than steps ({})", self.steps),
            );
        }
        if self.train_rows == Some(0) {
            return err("train_rows", "must be at least 1".into());
        }
        if self.threads.is_some_and(|t| t < 1) {
            return err("threads", "must be at least 1".into());
        }
        Ok(())
    }

    /// Gradient accumulation steps for a world size.
    pub fn accumulation(&self, world: usize) -> Result<usize> {
        let per_update = self.micro_batch * world;
        match self.global_batch {
            None => Ok(1),
            Some(g) if g % per_update == 0 => Ok(g / per_update),
            Some(g) => bail!(
                "global_batch {g} is not a multiple of micro_batch × world size = {} × {world}",
                self.micro_batch
            ),
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            peak_lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            decay: self.decay,
        }
    }
}
