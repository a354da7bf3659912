//! The `sft` stage: LeoLM's chat fine-tuning (docs/sft.md).
//!
//! The data side, one module per step: [`formats`] reads chat datasets into [`Conversation`]s,
//! [`chatml`] renders them as ChatML (and writes the matching Jinja chat template), [`encode`](mod@encode)
//! tokenizes a rendered conversation and marks which tokens are trained, [`mix`](mod@mix) weights the
//! datasets and holds out a validation split, [`pack`](mod@pack) fills fixed-length rows for
//! document-masked attention, and [`config`] holds the stage's data params. [`stage`] is the
//! plugin: those rows through the shared trainer (`leo-train`) into an HF chat checkpoint.

pub mod chatml;
pub mod config;
pub mod encode;
pub mod estimate;
pub mod formats;
pub mod mix;
pub mod pack;
pub mod stage;

pub use chatml::{ChatFormat, LEOLM_SYSTEM_PROMPT};
pub use config::{DataParams, DatasetParams};
pub use encode::{encode, Encoded, LossOn, IGNORE_INDEX};
pub use formats::{
    read_dataset, Conversation, Dataset, Format, Malformed, Message, OnMalformed, Role,
};
pub use mix::{is_validation, mix, Mix, MixCounts, MixInput, Pick};
pub use pack::{pack, PackStats, Packed, Row};
pub use stage::Sft;
