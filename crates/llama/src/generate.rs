//! The inference API the eval and serving stages use: generation with a KV cache, and
//! log-likelihoods of continuations (lm-eval's `loglikelihood` request).

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::model::{check_len, KvCache, Llama};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling (Holtzman et al. 2019); 1.0 = off.
    pub top_p: f64,
    /// Generation stops after any of these tokens (it is included in the output).
    pub stop_tokens: Vec<i64>,
    /// [`Llama::generate_text`] stops when the text contains one of these; the text ends before
    /// it (OpenAI's `stop`).
    pub stop_strings: Vec<String>,
    pub seed: i64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

/// What [`Llama::generate_text`] produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Every generated token (including a stop token, and the tokens of a stop string).
    pub tokens: Vec<i64>,
    /// The decoded text, cut before a stop string.
    pub text: String,
    pub finish: Finish,
}

impl Llama {
    /// Generates up to `max_new_tokens` after `prompt` (token ids), using a KV cache: the
    /// prompt is encoded once, then one position per step.
    pub fn generate(&self, prompt: &[i64], opts: &GenerateOptions) -> Result<Vec<i64>> {
        Ok(self.generate_until(prompt, opts, |_| Ok(false))?.0)
    }

    /// Generates and decodes text, stopping at a stop token or a stop string.
    pub fn generate_text(
        &self,
        tokenizer: &Tokenizer,
        prompt: &[i64],
        opts: &GenerateOptions,
    ) -> Result<Generation> {
        self.generate_text_streaming(tokenizer, prompt, opts, |_| Ok(()))
    }

    /// [`Llama::generate_text`], calling `on_text` after every token with the text decoded so
    /// far (not yet cut at a stop string), so that a server can stream it. An error from
    /// `on_text` (a client gone) ends generation with that error.
    pub fn generate_text_streaming(
        &self,
        tokenizer: &Tokenizer,
        prompt: &[i64],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<Generation> {
        let mut text = String::new();
        let mut cut = None;
        let (tokens, finish) = self.generate_until(prompt, opts, |tokens| {
            let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
            text = tokenizer.decode(&ids, true)?;
            on_text(&text)?;
            cut = opts
                .stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()))
                .min();
            Ok(cut.is_some())
        })?;
        if let Some(at) = cut {
            text.truncate(at);
        }
        Ok(Generation {
            tokens,
            text,
            finish,
        })
    }

    /// The decoding loop; `stop` sees the tokens so far after each step.
    fn generate_until(
        &self,
        prompt: &[i64],
        opts: &GenerateOptions,
        mut stop: impl FnMut(&[i64]) -> Result<bool>,
    ) -> Result<(Vec<i64>, Finish)> {
        let _guard = tch::no_grad_guard();
        check_len(&self.config, (prompt.len() + opts.max_new_tokens) as i64)?;
        let mut rng = Rng::new(opts.seed);
        let mut cache = KvCache::new();
        let mut logits = self.forward(&self.ids_tensor(prompt)?, Some(&mut cache));
        let mut out = Vec::with_capacity(opts.max_new_tokens);
        for _ in 0..opts.max_new_tokens {
            let last = logits.select(1, -1).squeeze_dim(0).to_kind(Kind::Float);
            let next = pick(&last, opts, &mut rng)?;
            out.push(next);
            if opts.stop_tokens.contains(&next) || stop(&out)? {
                return Ok((out, Finish::Stop));
            }
            logits = self.forward(&self.ids_tensor(&[next])?, Some(&mut cache));
        }
        Ok((out, Finish::Length))
    }

    /// For each (context, continuation) pair: the summed log-probability of the continuation
    /// given the context, and whether greedy decoding would have produced it. Only the scored
    /// positions are projected to the vocabulary.
    pub fn loglikelihood(&self, requests: &[(Vec<i64>, Vec<i64>)]) -> Result<Vec<(f64, bool)>> {
        let _guard = tch::no_grad_guard();
        let mut out = Vec::with_capacity(requests.len());
        for (context, continuation) in requests {
            anyhow::ensure!(
                !context.is_empty() && !continuation.is_empty(),
                "context and continuation must not be empty"
            );
            let ids: Vec<i64> = context.iter().chain(continuation.iter()).copied().collect();
            check_len(&self.config, ids.len() as i64)?;
            let hidden = self.hidden(&self.ids_tensor(&ids)?, None);
            // Position p predicts token p + 1: score positions len(ctx)-1 .. len(ids)-2.
            let start = context.len() as i64 - 1;
            let scored = hidden.narrow(1, start, continuation.len() as i64);
            let logp = self
                .project(&scored)
                .to_kind(Kind::Float)
                .log_softmax(-1, Kind::Float)
                .squeeze_dim(0);
            let target = Tensor::from_slice(continuation)
                .to_device(self.device())
                .unsqueeze(1);
            let total = logp
                .gather(1, &target, false)
                .sum(Kind::Double)
                .double_value(&[]);
            let greedy = logp
                .argmax(-1, false)
                .eq_tensor(&target.squeeze_dim(1))
                .all()
                .int64_value(&[])
                == 1;
            out.push((total, greedy));
        }
        Ok(out)
    }
}

/// The next token: argmax at temperature 0, else a sample from the tempered distribution,
/// restricted to its nucleus when `top_p < 1`. Sampling draws from the request's own generator
/// (not libtorch's global one), so concurrent requests do not disturb each other's seeds.
fn pick(logits: &Tensor, opts: &GenerateOptions, rng: &mut Rng) -> Result<i64> {
    if opts.temperature <= 0.0 {
        return Ok(logits.argmax(-1, false).int64_value(&[]));
    }
    let probs = (logits / opts.temperature).softmax(-1, Kind::Float);
    let weights = Vec::<f32>::try_from(nucleus(&probs, opts.top_p).to_device(tch::Device::Cpu))?;
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    let mut target = rng.uniform() * total;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            last = i;
            target -= w as f64;
            if target < 0.0 {
                break;
            }
        }
    }
    Ok(last as i64)
}

/// SplitMix64 (Steele et al. 2014): a small, seedable generator for sampling.
struct Rng(u64);

impl Rng {
    fn new(seed: i64) -> Rng {
        Rng(seed as u64)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Nucleus (top-p) filtering (Holtzman et al. 2019): keeps the most likely tokens up to the
/// smallest set whose probability reaches `top_p` (always at least one) and zeroes the rest,
/// unnormalised (sampling normalises).
fn nucleus(probs: &Tensor, top_p: f64) -> Tensor {
    if top_p >= 1.0 {
        return probs.shallow_clone();
    }
    let (sorted, idx) = probs.sort(-1, true);
    let cum = sorted.cumsum(-1, Kind::Float);
    // A token is dropped when the more likely tokens before it already reach top_p.
    let drop = (&cum - &sorted).ge(top_p);
    let kept = sorted.masked_fill(&drop, 0.0);
    Tensor::zeros_like(probs).scatter(-1, &idx, &kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nucleus_is_the_smallest_set_reaching_top_p() {
        let probs = Tensor::from_slice(&[0.05f32, 0.5, 0.15, 0.3]);
        let kept = |p: f64| -> Vec<f32> { Vec::try_from(nucleus(&probs, p)).unwrap() };
        assert_eq!(kept(0.7), [0.0, 0.5, 0.0, 0.3]);
        assert_eq!(kept(0.79), [0.0, 0.5, 0.0, 0.3]);
        assert_eq!(kept(0.81), [0.0, 0.5, 0.15, 0.3]);
        assert_eq!(kept(0.01), [0.0, 0.5, 0.0, 0.0]);
        assert_eq!(kept(1.0), [0.05, 0.5, 0.15, 0.3]);
    }

    #[test]
    fn sampling_stays_inside_the_nucleus_and_follows_the_seed() {
        let logits = Tensor::from_slice(&[0.0f32, 2.0, 1.0, 1.5]);
        let opts = GenerateOptions {
            temperature: 1.0,
            top_p: 0.6,
            ..Default::default()
        };
        let draw = |seed| -> Vec<i64> {
            let mut rng = Rng::new(seed);
            (0..2000)
                .map(|_| pick(&logits, &opts, &mut rng).unwrap())
                .collect()
        };
        let a = draw(1);
        // softmax = [0.064, 0.474, 0.174, 0.288]: the nucleus for 0.6 is tokens 1 and 3, drawn
        // in proportion 0.474 : 0.288.
        assert!(a.iter().all(|t| [1, 3].contains(t)), "{:?}", &a[..20]);
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!(
            (ones - 0.474 / 0.762).abs() < 0.04,
            "share of token 1: {ones}"
        );
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
    }
}
