//! Training on libtorch, shared by the pretraining and SFT stages (torchtitan-style pieces):
//!
//! - [`data`]: rows packed from the tokenize stage's shards, the seeded order, the position a
//!   run resumes from;
//! - [`collective`]: reduce-scatter / all-gather between ranks behind one trait; a TCP ring
//!   that runs on the CPU;
//! - [`zero`]: AdamW with PyTorch's fused kernel, its state sharded across ranks (ZeRO-1);
//! - [`schedule`]: warmup and cosine decay to a floor, as `transformers` computes it;
//! - [`precision`]: autocast and loss scaling;
//! - [`checkpoint`]: files first, completion marker, then the pointer to the latest;
//! - [`trainer`]: the loop, metrics, validation, SIGTERM;
//! - [`stage`]: what the training stages share around it (ranks, device, resume, params);
//! - [`estimate`]: what a training stage costs (parameters, FLOPs, checkpoint bytes) for
//!   `leo plan`; [`expected`]: a continued checkpoint checked against the workflow's shape.
//!
//! [`AdamW`] (unsharded, per-parameter state) is the plain optimizer the training-step benchmark
//! compares with `torch.optim.AdamW(fused=True)`.

pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod estimate;
pub mod expected;
mod ffi;
mod optim;
pub mod params;
pub mod precision;
pub mod schedule;
pub mod stage;
pub mod trainer;
pub mod zero;

pub use optim::{AdamW, AdamWConfig};

/// Keeps freed memory in the process's heap (glibc `mallopt`). Training allocates and frees the
/// same large buffers (logit chunks, activations) every step; by default glibc returns blocks
/// over 32 MiB to the kernel, so every step pays for zeroing fresh pages again (16% of the CPU
/// time in `just bench train`'s profile). Keeping them made updates 16–24% faster for 2% more
/// peak memory. Call it first thing in a training process, before any thread starts.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator settings; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
pub use params::TrainParams;
pub use trainer::{train, Outcome, Run, Stopped};
