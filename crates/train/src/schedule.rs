//! Learning-rate schedules, as `transformers.get_scheduler` computes them, so that a run here and
//! a run with the HF Trainer see the same rate at every step: linear warmup from 0, then cosine
//! decay to a floor (`cosine_with_min_lr`; LeoLM stage 2: 2e-5 → 2e-6 over 15,360 steps after
//! 153 warmup steps), linear decay to the floor, or constant.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    #[default]
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak_lr: f64,
    /// The floor the decay ends at (`min_lr` of `cosine_with_min_lr`).
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl Schedule {
    /// The rate for the optimizer update that follows `step` finished updates (the HF
    /// `LambdaLR` convention: the first update, at step 0, has rate 0 when there is warmup).
    pub fn lr(&self, step: u64) -> f64 {
        let s = step as f64;
        if step < self.warmup_steps {
            return self.peak_lr * s / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((s - self.warmup_steps as f64) / span).min(1.0);
        let floor = self.min_lr / self.peak_lr.max(f64::MIN_POSITIVE);
        let factor = match self.decay {
            Decay::Constant => return self.peak_lr,
            // transformers: 0.5 * (1 + cos(pi * num_cycles * 2 * progress)), num_cycles 0.5,
            // then factor * (1 - min_lr_rate) + min_lr_rate.
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => 1.0 - progress,
        };
        self.peak_lr * (factor * (1.0 - floor) + floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leolm() -> Schedule {
        Schedule {
            peak_lr: 2e-5,
            min_lr: 2e-6,
            warmup_steps: 153,
            total_steps: 15_360,
            decay: Decay::Cosine,
        }
    }

    #[test]
    fn warmup_is_linear_from_zero() {
        let s = leolm();
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(1) - 2e-5 / 153.0).abs() < 1e-18);
        assert!((s.lr(153) - 2e-5).abs() < 1e-18);
    }

    #[test]
    fn cosine_ends_at_the_floor_and_halves_midway() {
        let s = leolm();
        assert!((s.lr(15_360) - 2e-6).abs() < 1e-18);
        assert!((s.lr(20_000) - 2e-6).abs() < 1e-18);
        let mid = 153 + (15_360 - 153) / 2;
        // Halfway (to within one step) the rate is the mean of peak and floor.
        assert!((s.lr(mid) - 1.1e-5).abs() < 1e-8);
        for step in 153..15_360 {
            assert!(s.lr(step + 1) <= s.lr(step));
        }
    }

    #[test]
    fn linear_and_constant() {
        let mut s = leolm();
        s.decay = Decay::Linear;
        let mid = 153 + (15_360 - 153) / 2;
        assert!((s.lr(mid) - 1.1e-5).abs() < 1e-8);
        s.decay = Decay::Constant;
        assert_eq!(s.lr(10_000), 2e-5);
    }
}
