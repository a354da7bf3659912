//! Training on libtorch, shared by the pretraining and SFT stages: [`AdamW`] with PyTorch's fused
//! kernel (through a small C++ shim, `csrc/optim.cpp`, for the ops tch does not bind).

mod ffi;
mod optim;

pub use optim::{AdamW, AdamWConfig};
