//! Llama on libtorch, numerically as Hugging Face `transformers` defines it.
//!
//! - [`Config`] deserialises from an HF `config.json` (both the Llama-2 era `rope_scaling` form
//!   and transformers 5's `rope_parameters`).
//! - [`Llama`] loads `model.safetensors` or sharded `model-*.safetensors` + index, memory-mapped.
//! - [`Llama::save`] writes the same layout back (shards, index, `{"format": "pt"}`).
//! - [`Llama::forward`] with an optional [`KvCache`]; [`Llama::generate`] and
//!   [`Llama::loglikelihood`] are the inference API the eval and serving stages use.
//! - Training: [`Llama::init`] (transformers' initialisation), [`Llama::make_trainable`],
//!   [`Llama::forward_packed`] (document-masked attention for packed sequences),
//!   [`next_token_loss`] and [`Llama::train_loss`] (the same loss, output layer chunked); the optimizer and train loop live in `leo-train`.
//!
//! This crate links libtorch; the engine crates never depend on it.

mod config;
mod generate;
mod loss;
mod model;
mod save;
mod tokenizer;
mod weights;

pub use config::{Config, RopeScaling};
pub use generate::{Finish, GenerateOptions, Generation};
pub use loss::{next_token_loss, TrainLoss};
pub use model::{KvCache, Llama};
pub use tch;
pub use tokenizer::{TokenSpans, Tokenizer, CHATML};
