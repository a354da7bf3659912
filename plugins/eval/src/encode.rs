//! Prompts into token requests, as lm-evaluation-harness's HF backend tokenizes them.
//!
//! - `_encode_pair`: trailing whitespace of the context moves to the continuation; the
//!   continuation's tokens are those of `encode(context + continuation)` after
//!   `len(encode(context))`, so the split matches how the whole text tokenizes.
//! - An empty context becomes the prefix token (BOS), unless the continuation starts with it.
//! - Rolling windows (`get_rolling_token_windows` + `make_disjoint_window`, context length 1):
//!   the text is cut into windows of `max_length` predicted tokens, the first conditioned on the
//!   prefix token.
//!
//! BOS: lm-eval 0.4 prepends it when the tokenizer says so; LeoLM's fork (0.3) never did, so
//! leo's default is `add_bos_token = false` (the same as `--model_args add_bos_token=False`).

use anyhow::Result;
use leo_llama::Tokenizer;

use crate::score::Request;

pub struct Encoder<'t> {
    pub tokenizer: &'t Tokenizer,
    pub add_bos_token: bool,
    /// BOS (lm-eval's `prefix_token_id`).
    pub prefix_token: i64,
    pub max_length: usize,
}

impl Encoder<'_> {
    fn encode(&self, text: &str, special: bool) -> Result<Vec<i64>> {
        Ok(self
            .tokenizer
            .encode(text, special)?
            .into_iter()
            .map(i64::from)
            .collect())
    }

    /// The requests of one prompt and its continuations, in continuation order.
    pub fn pairs(&self, context: &str, continuations: &[String]) -> Result<Vec<Request>> {
        if context.is_empty() {
            return continuations
                .iter()
                .map(|c| {
                    let cont = self.encode(c, false)?;
                    Ok(match cont.first() {
                        Some(&first) if first == self.prefix_token => Request {
                            context: vec![first],
                            continuation: cont[1..].to_vec(),
                        },
                        _ => Request {
                            context: vec![self.prefix_token],
                            continuation: cont,
                        },
                    })
                })
                .collect();
        }
        let trimmed = context.trim_end();
        let moved = &context[trimmed.len()..];
        let context_ids = self.encode(trimmed, self.add_bos_token)?;
        continuations
            .iter()
            .map(|c| {
                let whole = self.encode(&format!("{trimmed}{moved}{c}"), self.add_bos_token)?;
                let continuation = whole.get(context_ids.len()..).unwrap_or_default().to_vec();
                Ok(Request {
                    context: context_ids.clone(),
                    continuation,
                })
            })
            .collect()
    }

    /// The disjoint rolling windows of a text.
    pub fn rolling(&self, text: &str) -> Result<Vec<Request>> {
        let tokens = self.encode(text, self.add_bos_token)?;
        Ok(rolling_windows(&tokens, self.prefix_token, self.max_length))
    }
}

/// `get_rolling_token_windows(tokens, prefix, max_len, context_len=1)` made disjoint.
pub fn rolling_windows(tokens: &[i64], prefix: i64, max_len: usize) -> Vec<Request> {
    let mut out = Vec::new();
    if tokens.is_empty() {
        return out;
    }
    let first = max_len.min(tokens.len());
    let mut input = vec![prefix];
    input.extend_from_slice(&tokens[..first - 1]);
    out.push(disjoint(input, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let n = (tokens.len() - predicted).min(max_len);
        let end = predicted + n;
        let input = tokens[end - max_len - 1..end - 1].to_vec();
        out.push(disjoint(input, tokens[end - n..end].to_vec()));
        predicted += n;
    }
    out
}

/// `make_disjoint_window`: the context without the positions the prediction covers.
fn disjoint(input: Vec<i64>, pred: Vec<i64>) -> Request {
    let keep = input.len() - (pred.len() - 1);
    Request {
        context: input[..keep].to_vec(),
        continuation: pred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_windows_match_lm_eval() {
        // lm_eval.utils: list(map(make_disjoint_window, get_rolling_token_windows(
        //     list(range(10, 20)), prefix_token=1, max_seq_len=4, context_len=1)))
        let w = rolling_windows(&(10..20).collect::<Vec<i64>>(), 1, 4);
        let got: Vec<(Vec<i64>, Vec<i64>)> =
            w.into_iter().map(|r| (r.context, r.continuation)).collect();
        assert_eq!(
            got,
            vec![
                (vec![1], vec![10, 11, 12, 13]),
                (vec![13], vec![14, 15, 16, 17]),
                (vec![15, 16, 17], vec![18, 19]),
            ]
        );
        let w = rolling_windows(&[5, 6], 1, 4);
        assert_eq!(
            (w[0].context.clone(), w[0].continuation.clone()),
            (vec![1], vec![5, 6])
        );
    }
}
