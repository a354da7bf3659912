//! The inference API the eval and serving stages use: generation with a KV cache, and
//! log-likelihoods of continuations (lm-eval's `loglikelihood` request).

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::model::{check_len, KvCache, Llama};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling (Holtzman et al. 2019); 1.0 = off.
    pub top_p: f64,
    /// Generation stops after any of these tokens (it is included in the output).
    pub stop_tokens: Vec<i64>,
    pub seed: i64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

impl Llama {
    /// Generates up to `max_new_tokens` after `prompt` (token ids), using a KV cache: the
    /// prompt is encoded once, then one position per step.
    pub fn generate(&self, prompt: &[i64], opts: &GenerateOptions) -> Result<Vec<i64>> {
        let _guard = tch::no_grad_guard();
        check_len(&self.config, (prompt.len() + opts.max_new_tokens) as i64)?;
        if opts.temperature > 0.0 {
            tch::manual_seed(opts.seed);
        }
        let mut cache = KvCache::new();
        let mut logits = self.forward(&self.ids_tensor(prompt)?, Some(&mut cache));
        let mut out = Vec::with_capacity(opts.max_new_tokens);
        for _ in 0..opts.max_new_tokens {
            let last = logits.select(1, -1).squeeze_dim(0).to_kind(Kind::Float);
            let next = self.pick(&last, opts);
            out.push(next);
            if opts.stop_tokens.contains(&next) {
                break;
            }
            logits = self.forward(&self.ids_tensor(&[next])?, Some(&mut cache));
        }
        Ok(out)
    }

    fn pick(&self, logits: &Tensor, opts: &GenerateOptions) -> i64 {
        if opts.temperature <= 0.0 {
            return logits.argmax(-1, false).int64_value(&[]);
        }
        let probs = (logits / opts.temperature).softmax(-1, Kind::Float);
        let probs = if opts.top_p < 1.0 {
            let (sorted, idx) = probs.sort(-1, true);
            let cum = sorted.cumsum(-1, Kind::Float);
            // Keep the smallest prefix whose mass reaches top_p (always at least one token).
            let drop = (&cum - &sorted).gt(opts.top_p);
            let kept = sorted.masked_fill(&drop, 0.0);
            Tensor::zeros_like(&probs).scatter(-1, &idx, &kept)
        } else {
            probs
        };
        probs.multinomial(1, false).int64_value(&[0])
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
