//! Mixed precision: which dtype the matrix multiplications run in, autocast on CUDA (bf16 or
//! fp16, weights and optimizer state stay f32, as `torch.autocast` with f32 master weights), and
//! dynamic loss scaling for fp16 (Micikevicius et al. 2018, "Mixed Precision Training").

use anyhow::{bail, Result};
use tch::Device;

use crate::ffi;
use crate::params::Precision;

/// The precision a run uses on `device`: `auto` is bf16 on CUDA and f32 on the CPU.
pub fn resolve(p: Precision, device: Device) -> Result<Precision> {
    Ok(match (p, device.is_cuda()) {
        (Precision::Auto, true) => Precision::Bf16,
        (Precision::Auto, false) => Precision::F32,
        (Precision::Bf16 | Precision::Fp16, false) => {
            bail!("precision {p:?} needs a CUDA device; on the CPU leo trains in f32")
        }
        (p, _) => p,
    })
}

/// Runs `f` with CUDA autocast to the precision's dtype (nothing changes for f32).
pub fn autocast<T>(p: Precision, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dtype = match p {
        Precision::Bf16 => ffi::AUTOCAST_BF16,
        Precision::Fp16 => ffi::AUTOCAST_FP16,
        Precision::F32 | Precision::Auto => return f(),
    };
    ffi::autocast_enter(dtype)?;
    let out = f();
    ffi::autocast_exit()?;
    out
}

/// fp16's dynamic loss scale: start at 2^16, halve when a gradient overflows (that update is
/// skipped), double after 2000 clean updates — `torch.amp.GradScaler`'s defaults. Scale 1 for
/// other precisions.
pub struct LossScaler {
    pub scale: f64,
    dynamic: bool,
    clean: u32,
}

impl LossScaler {
    pub fn new(p: Precision) -> LossScaler {
        let dynamic = p == Precision::Fp16;
        LossScaler {
            scale: if dynamic { 65536.0 } else { 1.0 },
            dynamic,
            clean: 0,
        }
    }

    pub fn update(&mut self, skipped: bool) {
        if !self.dynamic {
            return;
        }
        if skipped {
            self.scale = (self.scale / 2.0).max(1.0);
            self.clean = 0;
        } else {
            self.clean += 1;
            if self.clean == 2000 {
                self.scale *= 2.0;
                self.clean = 0;
            }
        }
    }
}

/// Peak dense bf16 TFLOP/s of the GPU, for known NVIDIA models (read from the driver's
/// `/proc/driver/nvidia/gpus/*/information`, no library needed).
pub fn detect_peak_tflops(device: Device) -> Option<f64> {
    if !device.is_cuda() {
        return None;
    }
    let dirs = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    let mut models = dirs.filter_map(|d| {
        let text = std::fs::read_to_string(d.ok()?.path().join("information")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
    });
    peak_for(&models.next()?)
}

fn peak_for(model: &str) -> Option<f64> {
    // Dense bf16 tensor-core peaks from NVIDIA's data sheets (SXM parts).
    let table = [
        ("H200", 989.4),
        ("H100 PCIe", 756.0),
        ("H100", 989.4),
        ("A100", 312.0),
        ("L40S", 362.05),
        ("A10", 125.0),
    ];
    table
        .iter()
        .find(|(name, _)| model.contains(name))
        .map(|&(_, peak)| peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_half_precision_needs_cuda() {
        assert_eq!(
            resolve(Precision::Auto, Device::Cpu).unwrap(),
            Precision::F32
        );
        assert!(resolve(Precision::Bf16, Device::Cpu).is_err());
        assert_eq!(
            resolve(Precision::Auto, Device::Cuda(0)).unwrap(),
            Precision::Bf16
        );
    }

    #[test]
    fn loss_scale_halves_on_overflow_and_grows_after_clean_steps() {
        let mut s = LossScaler::new(Precision::Fp16);
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..2000 {
            s.update(false);
        }
        assert_eq!(s.scale, 65536.0);
        let mut f = LossScaler::new(Precision::F32);
        f.update(true);
        assert_eq!(f.scale, 1.0);
    }

    #[test]
    fn known_gpus_have_peaks() {
        assert_eq!(peak_for("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(peak_for("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_for("NVIDIA GeForce GTX 1080"), None);
    }
}
