//! Chat prompts for leo's served and evaluated models, without any ML library.
//!
//! - [`ChatTemplate`] loads a checkpoint folder's chat template (`chat_template.jinja`, else
//!   `tokenizer_config.json`'s `chat_template`) and renders conversations exactly as
//!   transformers' `apply_chat_template(..., tokenize=False)` does, on `minijinja` configured
//!   like HF's Jinja environment. A model prompted differently from how it was fine-tuned
//!   answers worse, so the conformance test compares the two on real Hub templates.
//! - [`openai`] holds the OpenAI chat-completions wire types (request, response, stream chunk,
//!   error body) that `leo serve` answers with and HTTP clients (the mtbench judge) send.
//!
//! The prompt's token ids are the tokenizer's encoding of the rendered text; whether the
//! tokenizer should add its BOS is [`ChatTemplate::add_special_tokens`].

mod pyjson;
mod template;

pub mod openai;

pub use openai::ChatMessage;
pub use template::{ChatError, ChatTemplate, SPECIAL_TOKEN_NAMES};
