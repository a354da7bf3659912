//! Log-likelihoods of continuations, computed as lm-evaluation-harness's HF backend computes
//! them (`_loglikelihood_tokens`: the model sees `(context + continuation)[-(max_length+1):][:-1]`
//! and the continuation's tokens are scored), with much less work:
//!
//! - each distinct context runs through the model once, and all its continuations are scored
//!   together as one batch over its key/value cache (lm-eval runs the context again for every
//!   choice);
//! - contexts are taken in token order and the cache of the previous one is kept up to the
//!   shared prefix (the description and few-shot examples of an MMLU subject, TruthfulQA's
//!   preamble), so a shared prefix is computed once;
//! - only scored positions are projected to the vocabulary (lm-eval takes a log-softmax over
//!   every position of every request).
//!
//! A request longer than the model's window is scored alone, left-truncated exactly as lm-eval
//! truncates it.

use std::collections::BTreeMap;

use anyhow::Result;
use leo_llama::{KvCache, Llama};
use tch::{Kind, Tensor};

/// One (context, continuation) pair in token ids; the context is never empty.
#[derive(Debug, Clone)]
pub struct Request {
    pub context: Vec<i64>,
    pub continuation: Vec<i64>,
}

/// The continuation's summed log-probability and whether greedy decoding gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub loglikelihood: f64,
    pub greedy: bool,
}

pub struct Scorer<'m> {
    model: &'m Llama,
    max_length: usize,
    /// The log-softmax precision: the model's when it is f64, else f32.
    kind: Kind,
    /// Tokens whose keys and values are in `cache`.
    cached: Vec<i64>,
    cache: KvCache,
}

impl<'m> Scorer<'m> {
    pub fn new(model: &'m Llama, max_length: usize) -> Scorer<'m> {
        let kind = if model.kind() == Kind::Double {
            Kind::Double
        } else {
            Kind::Float
        };
        Scorer {
            model,
            max_length,
            kind,
            cached: Vec::new(),
            cache: KvCache::new(),
        }
    }

    /// Scores every request; `progress` is called with the number of requests done so far.
    pub fn score(
        &mut self,
        requests: &[Request],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Scored>> {
        let _guard = tch::no_grad_guard();
        let mut groups: BTreeMap<&[i64], Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            anyhow::ensure!(
                !r.context.is_empty() && !r.continuation.is_empty(),
                "request {i}: empty context or continuation"
            );
            groups.entry(r.context.as_slice()).or_default().push(i);
        }
        let mut out = vec![
            Scored {
                loglikelihood: 0.0,
                greedy: false
            };
            requests.len()
        ];
        let mut done = 0;
        for (context, members) in groups {
            let fits = members
                .iter()
                .all(|&i| context.len() + requests[i].continuation.len() <= self.max_length + 1);
            if fits {
                let conts: Vec<&[i64]> = members
                    .iter()
                    .map(|&i| requests[i].continuation.as_slice())
                    .collect();
                for (&i, s) in members.iter().zip(self.group(context, &conts)?) {
                    out[i] = s;
                }
            } else {
                for &i in &members {
                    out[i] = self.alone(&requests[i])?;
                }
            }
            done += members.len();
            progress(done);
        }
        Ok(out)
    }

    /// One context and all its continuations.
    fn group(&mut self, context: &[i64], conts: &[&[i64]]) -> Result<Vec<Scored>> {
        let shared = self
            .cached
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            .min(context.len() - 1);
        self.cache.truncate(shared as i64);
        self.cached.truncate(shared);
        let rest = ids(&context[shared..], self.model)?;
        let hidden = self.model.hidden(&rest, Some(&mut self.cache));
        self.cached.extend_from_slice(&context[shared..]);
        // The last context position predicts every continuation's first token.
        let last = hidden.narrow(1, hidden.size()[1] - 1, 1);
        let first_targets: Vec<i64> = conts.iter().map(|c| c[0]).collect();
        let (first_ll, first_hit) = self.log_probs(
            &last.expand([conts.len() as i64, 1, -1], false),
            &first_targets,
            1,
        )?;
        let mut out: Vec<Scored> = (0..conts.len())
            .map(|i| Scored {
                loglikelihood: first_ll[i],
                greedy: first_hit[i],
            })
            .collect();

        // The rest of each continuation, as one right-padded batch over the shared cache.
        let longer: Vec<usize> = (0..conts.len()).filter(|&i| conts[i].len() > 1).collect();
        if longer.is_empty() {
            return Ok(out);
        }
        let width = longer
            .iter()
            .map(|&i| conts[i].len() - 1)
            .max()
            .unwrap_or(1);
        let mut inputs = vec![0i64; longer.len() * width];
        let mut targets = vec![0i64; longer.len() * width];
        for (row, &i) in longer.iter().enumerate() {
            let c = conts[i];
            inputs[row * width..row * width + c.len() - 1].copy_from_slice(&c[..c.len() - 1]);
            targets[row * width..row * width + c.len() - 1].copy_from_slice(&c[1..]);
        }
        let input = Tensor::from_slice(&inputs)
            .view([longer.len() as i64, width as i64])
            .to_device(self.model.device());
        let mut batch_cache = self.cache.expand(longer.len() as i64);
        let hidden = self.model.hidden(&input, Some(&mut batch_cache));
        let (ll, hit) = self.log_probs(&hidden, &targets, width)?;
        for (row, &i) in longer.iter().enumerate() {
            let n = conts[i].len() - 1;
            let span = row * width..row * width + n;
            out[i].loglikelihood += ll[span.clone()].iter().sum::<f64>();
            out[i].greedy &= hit[span].iter().all(|&h| h);
        }
        Ok(out)
    }

    /// A request beyond the window: left-truncated as lm-eval does, computed from scratch.
    fn alone(&mut self, r: &Request) -> Result<Scored> {
        let mut all: Vec<i64> = r.context.iter().chain(&r.continuation).copied().collect();
        let keep = self.max_length + 1;
        if all.len() > keep {
            all.drain(..all.len() - keep);
        }
        all.pop();
        let n = r.continuation.len();
        anyhow::ensure!(
            n <= all.len(),
            "a continuation of {n} tokens does not fit the model's {} positions",
            self.max_length
        );
        let hidden = self.model.hidden(&ids(&all, self.model)?, None);
        let scored = hidden.narrow(1, (all.len() - n) as i64, n as i64);
        let (ll, hit) = self.log_probs(&scored, &r.continuation, n)?;
        Ok(Scored {
            loglikelihood: ll.iter().sum(),
            greedy: hit.iter().all(|&h| h),
        })
    }

    /// For hidden states `[b, t, h]` and targets (`b * t`, row-major): each target's
    /// log-probability and whether it is the argmax. Projects `t` in slices so a long window
    /// never holds `t x vocab` logits at once.
    fn log_probs(
        &self,
        hidden: &Tensor,
        targets: &[i64],
        t: usize,
    ) -> Result<(Vec<f64>, Vec<bool>)> {
        let b = hidden.size()[0];
        let vocab = self.model.config.vocab_size.max(1) as usize;
        let step = (32 * 1024 * 1024 / (vocab * b as usize)).clamp(1, t.max(1));
        let target = Tensor::from_slice(targets)
            .view([b, t as i64])
            .to_device(self.model.device());
        let mut ll = vec![0f64; targets.len()];
        let mut hit = vec![false; targets.len()];
        let mut start = 0;
        while start < t {
            let len = step.min(t - start);
            let h = hidden.narrow(1, start as i64, len as i64);
            let logp = self
                .model
                .project(&h)
                .to_kind(self.kind)
                .log_softmax(-1, self.kind);
            let tgt = target.narrow(1, start as i64, len as i64);
            let picked = logp.gather(2, &tgt.unsqueeze(-1), false).squeeze_dim(-1);
            let argmax = logp.argmax(-1, false);
            let picked: Vec<f64> = Vec::try_from(
                picked
                    .to_kind(Kind::Double)
                    .to_device(tch::Device::Cpu)
                    .reshape([-1]),
            )?;
            let same: Vec<bool> = Vec::try_from(
                argmax
                    .eq_tensor(&tgt)
                    .to_device(tch::Device::Cpu)
                    .reshape([-1]),
            )?;
            for row in 0..b as usize {
                for j in 0..len {
                    ll[row * t + start + j] = picked[row * len + j];
                    hit[row * t + start + j] = same[row * len + j];
                }
            }
            start += len;
        }
        Ok((ll, hit))
    }
}

fn ids(tokens: &[i64], model: &Llama) -> Result<Tensor> {
    Ok(Tensor::from_slice(tokens)
        .unsqueeze(0)
        .to_device(model.device()))
}
