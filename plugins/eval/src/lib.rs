//! The `eval` stage: benchmarks scored exactly as lm-evaluation-harness 0.4 scores them
//! (prompts, few-shot sampling, tokenization, metrics), with each distinct context computed
//! once. Task definitions are data (`tasks/*.toml`, lm-eval's field names); see docs/eval.md.

pub mod data;
pub mod encode;
pub mod evaluate;
pub mod metrics;
pub mod pyrandom;
pub mod requests;
pub mod results;
pub mod score;
pub mod stage;
pub mod task;
pub mod template;

pub use stage::Eval;
