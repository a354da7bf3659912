//! Tokenizers through the HF `tokenizers` crate (`tokenizer.json`), as the Python library
//! encodes them.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// ChatML's turn delimiters.
pub const CHATML: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// A text's tokens and where they came from ([`Tokenizer::encode_with_offsets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpans {
    pub ids: Vec<u32>,
    /// Each token's byte range in the text. Tokens from byte fallback share the range of their
    /// character; a token the normaliser prepends (Llama's `▁`) gets the range of the
    /// character it precedes; tokens the post-processor adds get an empty range.
    pub offsets: Vec<(usize, usize)>,
    /// Whether the post-processor added the token (Llama: the BOS).
    pub added: Vec<bool>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("loading tokenizer {}", path.display()))?;
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (Llama: BOS first).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`Tokenizer::encode`], with where each token came from in `text`. Chat
    /// fine-tuning maps its loss mask onto the tokens of one whole encoding with these ranges.
    pub fn encode_with_offsets(&self, text: &str, add_special_tokens: bool) -> Result<TokenSpans> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(TokenSpans {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
            added: enc
                .get_special_tokens_mask()
                .iter()
                .map(|&m| m == 1)
                .collect(),
        })
    }

    /// Encodes many texts in parallel.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), add_special_tokens)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// Adds ChatML's `<|im_start|>` and `<|im_end|>` (LeoLM's chat format) as special tokens;
    /// returns how many were new. Resize the model's embeddings to [`Tokenizer::vocab_size`].
    pub fn add_chatml_tokens(&mut self) -> Result<usize> {
        let tokens = CHATML
            .iter()
            .map(|t| tokenizers::AddedToken::from(*t, true));
        self.inner
            .add_special_tokens(tokens)
            .map_err(|e| anyhow!("adding ChatML tokens: {e}"))
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
