//! The C ABI of `csrc/optim.cpp`.

use anyhow::{bail, Result};
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn leo_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut std::ffi::c_char,
        err_len: usize,
    ) -> i32;

    fn leo_autocast_enter(dtype: i32, err: *mut std::ffi::c_char, err_len: usize) -> i32;
    fn leo_autocast_exit(err: *mut std::ffi::c_char, err_len: usize) -> i32;

    fn leo_grads_to_none(
        params: *const *mut C_tensor,
        n: usize,
        err: *mut std::ffi::c_char,
        err_len: usize,
    ) -> i32;
}

fn handles(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

fn check(rc: i32, err: &[u8], what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    bail!("{what}: {}", String::from_utf8_lossy(&err[..end]))
}

/// Hyperparameters of one fused AdamW call.
pub(crate) struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// `torch._fused_adamw_` over equally long lists; updates params, moments and steps in place.
pub(crate) fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    h: &AdamWStep,
) -> Result<()> {
    let n = params.len();
    assert!(
        [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
            .iter()
            .all(|&l| l == n),
        "fused_adamw: lists of different lengths"
    );
    let (p, g, m, v, s) = (
        handles(params),
        handles(grads),
        handles(exp_avgs),
        handles(exp_avg_sqs),
        handles(steps),
    );
    let mut err = [0u8; 1024];
    // SAFETY: every handle is a live tch tensor (borrowed for the call); the C++ side copies the
    // handles (reference counts), catches every exception, and writes at most err_len bytes.
    let rc = unsafe {
        leo_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    check(rc, &err, "fused AdamW step")
}

/// Drops the gradients of `params` (`grad = None`).
pub(crate) fn grads_to_none(params: &[&Tensor]) -> Result<()> {
    let p = handles(params);
    let mut err = [0u8; 1024];
    // SAFETY: as above; the C++ side only resets each tensor's gradient.
    let rc = unsafe { leo_grads_to_none(p.as_ptr(), p.len(), err.as_mut_ptr().cast(), err.len()) };
    check(rc, &err, "resetting gradients")
}

pub(crate) const AUTOCAST_BF16: i32 = 0;
pub(crate) const AUTOCAST_FP16: i32 = 1;

/// Enters CUDA autocast to bf16 ([`AUTOCAST_BF16`]) or fp16.
pub(crate) fn autocast_enter(dtype: i32) -> Result<()> {
    let mut err = [0u8; 1024];
    // SAFETY: the C++ side sets thread-local autocast state and catches every exception.
    let rc = unsafe { leo_autocast_enter(dtype, err.as_mut_ptr().cast(), err.len()) };
    check(rc, &err, "entering autocast")
}

pub(crate) fn autocast_exit() -> Result<()> {
    let mut err = [0u8; 1024];
    // SAFETY: as above.
    let rc = unsafe { leo_autocast_exit(err.as_mut_ptr().cast(), err.len()) };
    check(rc, &err, "leaving autocast")
}
