//! Next-token cross-entropy, as `LlamaForCausalLM` computes it when given `labels` (mean over
//! the scored positions, in f32, labels shifted left, `ignore_index` not scored).
//!
//! [`next_token_loss`] is the plain autograd form. [`Llama::train_loss`] gives the same loss and
//! gradients without ever holding the `[tokens, vocab]` logits: the output projection, softmax
//! and their gradients are computed in chunks of tokens during the forward pass (the fused
//! linear-cross-entropy of Liger-Kernel, Hsu et al. 2024). At Llama-2's 32,000-token vocabulary
//! the logits and their gradient are the largest tensors of a training step; chunking saves
//! their memory and several full passes over them.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use crate::model::Llama;

/// Token rows per chunk: about 16M logits (64 MB in f32) at a time.
const CHUNK_LOGITS: i64 = 1 << 24;

/// Mean next-token cross-entropy of `logits` `[b, t, vocab]` against `labels` `[b, t]`: the
/// logits at position p are scored against the label at p + 1; labels equal to `ignore_index`
/// (-100 in `transformers`) are not scored.
pub fn next_token_loss(logits: &Tensor, labels: &Tensor, ignore_index: i64) -> Tensor {
    let (b, t, v) = (logits.size()[0], logits.size()[1], logits.size()[2]);
    logits
        .to_kind(Kind::Float)
        .reshape([b * t, v])
        .cross_entropy_loss::<Tensor>(
            &shifted_targets(labels, ignore_index),
            None,
            tch::Reduction::Mean,
            ignore_index,
            0.0,
        )
}

/// Labels shifted left by one, the last position of each row padded with `ignore_index`
/// (shifting the labels, not the logits, avoids copying the logits), flattened to `[b * t]`.
fn shifted_targets(labels: &Tensor, ignore_index: i64) -> Tensor {
    let (b, t) = (labels.size()[0], labels.size()[1]);
    let ignored = Tensor::full([b, 1], ignore_index, (Kind::Int64, labels.device()));
    Tensor::cat(&[&labels.narrow(1, 1, t - 1), &ignored], 1).reshape([b * t])
}

/// A training step's loss, its gradients with respect to the final hidden states and the output
/// projection already computed; [`TrainLoss::backward`] sends them through the network.
pub struct TrainLoss<'a> {
    /// Mean cross-entropy over the scored tokens (a detached f32 scalar).
    pub loss: Tensor,
    /// Number of scored tokens.
    pub tokens: i64,
    hidden: Tensor,
    grad_hidden: Tensor,
    lm_head: Tensor,
    grad_lm_head: Tensor,
    recompute: Option<Recompute<'a>>,
}

/// What the backward pass of an activation-checkpointed forward needs: the input of every
/// layer, nothing inside them.
struct Recompute<'a> {
    model: &'a Llama,
    ids: Tensor,
    docs: Option<Tensor>,
    inputs: Vec<Tensor>,
    /// The last layer's output as a leaf: the final norm's graph starts here.
    last: Tensor,
}

impl TrainLoss<'_> {
    /// Accumulates the gradients of `scale × loss` into every parameter's `.grad()` (scale
    /// 1/accumulation-steps for gradient accumulation).
    pub fn backward(self, scale: f64) {
        // d/dθ of Σ(h · g) is exactly g flowing into h's graph: backward with a given gradient.
        let surrogate = (&self.hidden * (self.grad_hidden * scale)).sum(Kind::Float)
            + (&self.lm_head * (self.grad_lm_head * scale)).sum(Kind::Float);
        surrogate.backward();
        let Some(r) = self.recompute else {
            return;
        };
        // Layer by layer from the top: recompute the layer from its saved input with the graph
        // on, push the incoming gradient through it, keep the gradient of its input.
        let ctx = r.model.attention_context(&r.ids, 0, r.docs.as_ref());
        let mut grad = r.last.grad();
        for i in (0..r.model.num_layers()).rev() {
            let input = r.inputs[i].detach().set_requires_grad(true);
            let out = r.model.layer(i, &input, &ctx, None);
            (out * &grad).sum(Kind::Float).backward();
            grad = input.grad();
        }
        (r.model.embed(&r.ids) * grad).sum(Kind::Float).backward();
    }
}

impl Llama {
    /// The next-token loss of a training batch (`labels` usually equal `ids`; `doc_ids` as in
    /// [`Llama::forward_packed`]), equal to [`next_token_loss`] of the logits, with the output
    /// layer's gradients computed chunk by chunk. Call [`TrainLoss::backward`] next.
    pub fn train_loss(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        doc_ids: Option<&Tensor>,
        ignore_index: i64,
    ) -> Result<TrainLoss<'_>> {
        let rows = (CHUNK_LOGITS / self.config.vocab_size).max(1);
        self.train_loss_in_chunks(ids, labels, doc_ids, ignore_index, rows)
    }

    /// [`Llama::train_loss`] with activation checkpointing (Chen et al. 2016, "Training Deep
    /// Nets with Sublinear Memory Cost"; `torch.utils.checkpoint` per decoder layer): the
    /// forward pass keeps only each layer's input, and [`TrainLoss::backward`] recomputes one
    /// layer at a time. Same loss and gradients, about a third more compute.
    pub fn train_loss_recomputed(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        doc_ids: Option<&Tensor>,
        ignore_index: i64,
    ) -> Result<TrainLoss<'_>> {
        check_shapes(ids, labels)?;
        let ctx = self.attention_context(ids, 0, doc_ids);
        let mut inputs = Vec::with_capacity(self.num_layers());
        let last = {
            let _guard = tch::no_grad_guard();
            let mut x = self.embed(ids);
            for i in 0..self.num_layers() {
                let next = self.layer(i, &x, &ctx, None);
                inputs.push(x);
                x = next;
            }
            x.detach().set_requires_grad(true)
        };
        let hidden = self.final_norm(&last);
        let rows = (CHUNK_LOGITS / self.config.vocab_size).max(1);
        let mut out = self.head_loss(hidden, labels, ignore_index, rows)?;
        out.recompute = Some(Recompute {
            model: self,
            ids: ids.shallow_clone(),
            docs: doc_ids.map(|d| d.shallow_clone()),
            inputs,
            last,
        });
        Ok(out)
    }

    fn train_loss_in_chunks(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        doc_ids: Option<&Tensor>,
        ignore_index: i64,
        rows: i64,
    ) -> Result<TrainLoss<'_>> {
        check_shapes(ids, labels)?;
        let hidden = self.run(ids, None, doc_ids);
        self.head_loss(hidden, labels, ignore_index, rows)
    }

    /// The loss of the final hidden states and its gradients with respect to them and to the
    /// output layer, `rows` positions at a time, so the full logits never exist at once.
    fn head_loss(
        &self,
        hidden: Tensor,
        labels: &Tensor,
        ignore_index: i64,
        rows: i64,
    ) -> Result<TrainLoss<'_>> {
        let (b, t, h) = (hidden.size()[0], hidden.size()[1], hidden.size()[2]);
        let _guard = tch::no_grad_guard();
        let x = hidden.detach().reshape([b * t, h]);
        let targets = shifted_targets(labels, ignore_index);
        let scored = targets.ne(ignore_index);
        let tokens = scored.sum(Kind::Int64).int64_value(&[]);
        ensure!(tokens > 0, "the batch has no token to score");
        let w = self.lm_head.detach();
        let mut loss = Tensor::zeros([], (Kind::Double, x.device()));
        let mut grad_x = Vec::new();
        let mut grad_w = Tensor::zeros(w.size(), (Kind::Float, w.device()));
        let mut start = 0;
        while start < b * t {
            let n = rows.min(b * t - start);
            let xc = x.narrow(0, start, n);
            let target = targets.narrow(0, start, n);
            let weight = scored.narrow(0, start, n).to_kind(Kind::Float) / tokens as f64;
            // Ignored positions get target 0 and weight 0.
            let target = target.where_scalarother(&scored.narrow(0, start, n), 0);
            let mut logits = xc.linear::<Tensor>(&w, None).to_kind(Kind::Float);
            let lse = logits.logsumexp([-1], true);
            let picked = logits.gather(1, &target.unsqueeze(1), false);
            loss += ((&lse - picked).squeeze_dim(1) * &weight).sum(Kind::Double);
            // d loss / d logits = (softmax - onehot) × weight, built in place in `logits`.
            let _ = logits.subtract_(&lse).exp_();
            let _ = logits.scatter_add_(
                1,
                &target.unsqueeze(1),
                &Tensor::full([n, 1], -1.0, (Kind::Float, logits.device())),
            );
            let _ = logits.g_mul_(&weight.unsqueeze(1));
            let g = logits.to_kind(w.kind());
            grad_x.push(g.mm(&w));
            let _ = grad_w.addmm_(&g.transpose(0, 1), &xc.to_kind(Kind::Float));
            start += n;
        }
        Ok(TrainLoss {
            loss: loss.to_kind(Kind::Float),
            tokens,
            grad_hidden: Tensor::cat(&grad_x, 0).view([b, t, h]),
            hidden,
            lm_head: self.lm_head.shallow_clone(),
            grad_lm_head: grad_w.to_kind(w.kind()),
            recompute: None,
        })
    }
}

fn check_shapes(ids: &Tensor, labels: &Tensor) -> Result<()> {
    ensure!(
        ids.size() == labels.size(),
        "ids {:?} and labels {:?} differ in shape",
        ids.size(),
        labels.size()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use tch::Device;

    fn model() -> Llama {
        let config = Config::from_json(
            r#"{"vocab_size": 50, "hidden_size": 16, "intermediate_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}"#,
        )
        .unwrap();
        let mut m = Llama::init(config, Device::Cpu, Kind::Float, 3).unwrap();
        m.make_trainable();
        m
    }

    fn grads(m: &Llama) -> Vec<Tensor> {
        m.named_tensors()
            .iter()
            .map(|(_, p)| p.grad().copy())
            .collect()
    }

    #[test]
    fn chunks_ignored_labels_and_scale_give_the_autograd_gradients() {
        let ids = Tensor::randint(50, [3, 11], (Kind::Int64, Device::Cpu));
        // Some positions are not scored (as SFT masks prompts).
        let labels = ids.where_scalarother(&ids.remainder(3).ne(0), -100);

        let reference = model();
        let loss = next_token_loss(&reference.forward(&ids, None), &labels, -100) * 0.25;
        loss.backward();

        let chunked = model();
        // 7 rows per chunk: 33 positions make 5 chunks, the last one short.
        let l = chunked
            .train_loss_in_chunks(&ids, &labels, None, -100, 7)
            .unwrap();
        assert!((l.loss.double_value(&[]) * 0.25 - loss.double_value(&[])).abs() < 1e-6);
        l.backward(0.25);
        for (a, b) in grads(&reference).iter().zip(grads(&chunked)) {
            assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        }
    }

    #[test]
    fn recomputed_layers_give_the_same_loss_and_gradients() {
        let ids = Tensor::randint(50, [2, 9], (Kind::Int64, Device::Cpu));
        let labels = ids.where_scalarother(&ids.remainder(4).ne(0), -100);
        let docs = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3])
            .view([2, 9]);
        for d in [None, Some(&docs)] {
            let plain = model();
            let l = plain.train_loss(&ids, &labels, d, -100).unwrap();
            let loss = l.loss.double_value(&[]);
            l.backward(0.5);
            let again = model();
            let r = again.train_loss_recomputed(&ids, &labels, d, -100).unwrap();
            assert!((r.loss.double_value(&[]) - loss).abs() < 1e-6);
            r.backward(0.5);
            for ((name, a), b) in plain.named_tensors().iter().zip(grads(&again)) {
                let diff = (a.grad() - b).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "{name}: {diff}");
            }
        }
    }

    #[test]
    fn a_batch_with_nothing_to_score_is_an_error() {
        let m = model();
        let ids = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
        let labels = Tensor::full([1, 4], -100, (Kind::Int64, Device::Cpu));
        assert!(m.train_loss(&ids, &labels, None, -100).is_err());
        assert!(m
            .train_loss(&ids, &labels.narrow(1, 0, 2), None, -100)
            .is_err());
    }
}
