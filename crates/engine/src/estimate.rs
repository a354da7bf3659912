//! `leo plan`'s cost estimate: the plugins' own estimates (their `describe` replies, computed
//! from params alone) collected per stage and totalled, FLOPs turned into GPU-hours at a stated
//! MFU and device peak. The engine never interprets params: what a stage costs is its plugin's
//! knowledge; this module only adds up and divides.

use leo_plugin::Estimate;
use serde::Serialize;

use crate::check::Checked;

/// The device and utilisation GPU-hours are computed for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    /// What the user named (`a100`, `h100`, or a number of TFLOP/s).
    pub gpu: String,
    /// Dense bf16/fp16 tensor-core peak, TFLOP/s.
    pub peak_tflops: f64,
    /// Model FLOPs utilisation: the share of the peak that does useful work (0 < mfu ≤ 1).
    pub mfu: f64,
}

/// Known dense bf16 peaks (NVIDIA data sheets, SXM parts, no sparsity), TFLOP/s.
pub const GPU_PEAKS: &[(&str, f64)] = &[
    ("a100", 312.0),
    ("h100", 989.0),
    ("h200", 989.0),
    ("b200", 2250.0),
];

impl Hardware {
    /// `gpu` is a name from [`GPU_PEAKS`] or a peak in TFLOP/s; `mfu` a fraction or a percent.
    pub fn new(gpu: &str, mfu: f64) -> Result<Hardware, String> {
        let name = gpu.trim().to_ascii_lowercase();
        let peak = match GPU_PEAKS.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => *p,
            None => match name.parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 => p,
                _ => {
                    return Err(format!(
                        "--gpu {gpu}: not a known GPU ({}) nor a peak in TFLOP/s",
                        GPU_PEAKS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            },
        };
        // 45 means 45 %.
        let mfu = if mfu > 1.0 { mfu / 100.0 } else { mfu };
        if !(mfu > 0.0 && mfu <= 1.0) {
            return Err(format!("--mfu {mfu}: must be in (0, 1] (or a percent)"));
        }
        Ok(Hardware {
            gpu: name,
            peak_tflops: peak,
            mfu,
        })
    }

    /// GPU-hours for `flops` at this peak and MFU.
    pub fn gpu_hours(&self, flops: f64) -> f64 {
        flops / (self.peak_tflops * 1e12 * self.mfu) / 3600.0
    }
}

/// One stage's estimate with its GPU-hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCost {
    pub stage: String,
    #[serde(flatten)]
    pub estimate: Estimate,
    /// Dense + attention FLOPs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_hours: Option<f64>,
    /// GPUs the stage asks for, and the wall-clock hours on them at this MFU.
    pub gpus: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_hours: Option<f64>,
    pub storage_bytes: u64,
}

/// The workflow's estimate: every stage with one, in run order, and the sums.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostEstimate {
    pub hardware: Hardware,
    pub stages: Vec<StageCost>,
    pub total_flops: f64,
    pub total_gpu_hours: f64,
    pub total_storage_bytes: u64,
    /// Stages whose FLOPs are unknown (data-dependent or no shape): not in the totals.
    pub incomplete: Vec<String>,
    /// Stages whose plugins give no estimate (data stages, evaluation): not counted at all.
    pub unestimated: Vec<String>,
}

/// Collects the plugins' estimates over the checked workflow.
pub fn estimate(checked: &Checked, hardware: &Hardware) -> CostEstimate {
    let mut stages = Vec::new();
    let mut incomplete = Vec::new();
    let mut unestimated = Vec::new();
    for name in checked.dag.topo_order() {
        let e = checked
            .plugins
            .get(name)
            .and_then(|p| p.estimate.clone())
            .unwrap_or_default();
        if e.is_empty() {
            unestimated.push(name.clone());
            continue;
        }
        let gpus = checked.workflow.stages[name].resources.gpus;
        let flops = e.flops();
        let gpu_hours = flops.map(|f| hardware.gpu_hours(f));
        if flops.is_none() {
            incomplete.push(name.clone());
        }
        stages.push(StageCost {
            stage: name.clone(),
            flops,
            gpu_hours,
            gpus,
            wall_hours: gpu_hours.filter(|_| gpus > 0).map(|h| h / gpus as f64),
            storage_bytes: e.storage_bytes(),
            estimate: e,
        });
    }
    CostEstimate {
        hardware: hardware.clone(),
        total_flops: stages.iter().filter_map(|s| s.flops).sum(),
        total_gpu_hours: stages.iter().filter_map(|s| s.gpu_hours).sum(),
        total_storage_bytes: stages
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.storage_bytes)),
        stages,
        incomplete,
        unestimated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_hours_follow_the_peak_and_the_mfu() {
        // LEOLM.md: 5.0e21 FLOPs at 45% MFU ≈ 10,000 A100 hours or ≈ 3,200 H100 hours.
        let a100 = Hardware::new("A100", 0.45).unwrap();
        let h = a100.gpu_hours(5.0e21);
        assert!((h - 9_891.7).abs() < 1.0, "{h}");
        let h100 = Hardware::new("h100", 45.0).unwrap();
        assert_eq!(h100.mfu, 0.45);
        assert!((h100.gpu_hours(5.0e21) - 3_120.8).abs() < 1.0);
        assert_eq!(Hardware::new("400", 0.5).unwrap().peak_tflops, 400.0);
        assert!(Hardware::new("tpu", 0.45)
            .unwrap_err()
            .contains("a100, h100"));
        assert!(Hardware::new("a100", 0.0).is_err());
        assert!(Hardware::new("a100", 150.0).is_err());
    }
}
