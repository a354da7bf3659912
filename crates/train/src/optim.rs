//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay
//! Regularization"), stepping with PyTorch's fused kernel: the update `torch.optim.AdamW(fused=True)`
//! makes — the `transformers` Trainer's default optimizer on torch ≥ 2.8.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use crate::ffi::{self, AdamWStep};

/// AdamW's hyperparameters. Defaults are PyTorch's; LeoLM used betas (0.9, 0.95) and weight
/// decay 0.05.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One parameter and its optimizer state.
struct Slot {
    name: String,
    param: Tensor,
    /// Weight decay applies to matrices only, not to norm weights or biases (as the
    /// `transformers` Trainer groups them).
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// A float scalar on the parameter's device, as the fused kernel wants it.
    step: Tensor,
}

/// The optimizer over a model's parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    pub config: AdamWConfig,
}

impl AdamW {
    /// State for `params` (name, tensor that requires grad), moments at zero.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<AdamW> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, param) in params {
            ensure!(
                param.requires_grad(),
                "parameter {name} does not require gradients (call make_trainable first)"
            );
            let _guard = tch::no_grad_guard();
            slots.push(Slot {
                decay: param.dim() >= 2,
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                step: Tensor::zeros([], (Kind::Float, param.device())),
                name,
                param,
            });
        }
        Ok(AdamW { slots, config })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Steps taken so far (by the first parameter; all advance together).
    pub fn steps(&self) -> i64 {
        self.slots
            .first()
            .map_or(0, |s| s.step.double_value(&[]) as i64)
    }

    /// Updates every parameter that has a gradient, in two fused calls (with and without weight
    /// decay). Parameters without a gradient (unused in the loss) keep their state.
    pub fn step(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for decay in [true, false] {
            let live: Vec<(&Slot, Tensor)> = self
                .slots
                .iter()
                .filter(|s| s.decay == decay)
                .map(|s| (s, s.param.grad()))
                .filter(|(_, g)| g.defined())
                .collect();
            if live.is_empty() {
                continue;
            }
            let params: Vec<&Tensor> = live.iter().map(|(s, _)| &s.param).collect();
            let grads: Vec<&Tensor> = live.iter().map(|(_, g)| g).collect();
            let m: Vec<&Tensor> = live.iter().map(|(s, _)| &s.exp_avg).collect();
            let v: Vec<&Tensor> = live.iter().map(|(s, _)| &s.exp_avg_sq).collect();
            let steps: Vec<&Tensor> = live.iter().map(|(s, _)| &s.step).collect();
            let c = &self.config;
            let h = AdamWStep {
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                weight_decay: if decay { c.weight_decay } else { 0.0 },
                eps: c.eps,
            };
            ffi::fused_adamw(&params, &grads, &m, &v, &steps, &h)?;
        }
        Ok(())
    }

    /// Drops every gradient (`set_to_none`), so the next backward pass writes them afresh.
    pub fn zero_grad(&mut self) -> Result<()> {
        let params: Vec<&Tensor> = self.slots.iter().map(|s| &s.param).collect();
        ffi::grads_to_none(&params)
    }

    /// Names of the parameters with weight decay, then those without.
    pub fn groups(&self) -> (Vec<&str>, Vec<&str>) {
        let names = |d: bool| {
            self.slots
                .iter()
                .filter(|s| s.decay == d)
                .map(|s| s.name.as_str())
                .collect()
        };
        (names(true), names(false))
    }
}
