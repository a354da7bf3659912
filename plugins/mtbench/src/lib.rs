//! The `mtbench` stage (docs/mtbench.md): MT-Bench — LeoLM's MT-Bench-DE, FastEval's German
//! fork — for a chat checkpoint. Phase 1 generates two-turn answers with the model's own chat
//! template; phase 2 has any OpenAI-compatible endpoint judge them with FastChat's prompts and
//! score parsing. Every answer and every verdict is checkpointed as it arrives, so a killed
//! stage resumes without asking the judge again what it already answered.
//!
//! - `params.rs`: params, checked in `describe`;
//! - `questions.rs`: the question files (FastEval's object, FastChat's JSONL);
//! - `judge.rs`: which judge prompt for which turn, template filling, verdict parsing;
//! - `client.rs`: the chat-completions client and its retry policy;
//! - `records.rs`: answers and verdicts as immutable files, checkpoints of links to them;
//! - `answer.rs`: generation on libtorch;
//! - `report.rs`: FastChat's aggregation;
//! - `stage.rs`: the two phases and the outputs.

pub mod answer;
pub mod client;
pub mod judge;
pub mod params;
pub mod questions;
pub mod records;
pub mod report;
mod stage;

pub use stage::Mtbench;
