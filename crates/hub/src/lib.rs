//! `hf://` inputs: Hugging Face Hub repositories, folders and files, resolved through the Hub's
//! HTTP API into huggingface_hub's own cache layout, so a model that Python code downloaded is
//! not downloaded again by leo, and the other way round.
//!
//! ```text
//! hf://meta-llama/Llama-2-13b-hf                   a model repository (revision `main`)
//! hf://datasets/oscar-corpus/OSCAR-2301/de_meta    a folder of a dataset repository
//! hf://datasets/LeoLM/MMLU_de@main/test.jsonl      a file at a revision
//! ```
//!
//! [`Hub::resolve`] downloads what the cache lacks (resumable, verified) and returns the
//! snapshot path; [`Hub::status`] says what is missing without downloading (for `leo plan`).
//! The token goes to the endpoint's origin only, and into no message.

mod cache;
mod download;
mod error;
mod http;
mod resolve;
mod settings;
mod uri;

pub use error::HubError;
pub use resolve::{CacheStatus, Hub, Resolved};
pub use settings::{HubSettings, DEFAULT_ENDPOINT};
pub use uri::{HfUri, RepoKind, FORM};
