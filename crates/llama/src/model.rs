//! The Llama architecture (Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat
//! Models"), as `transformers`' `modeling_llama.py` computes it: RMSNorm (Zhang & Sennrich 2019),
//! rotary position embeddings in the rotate-half layout (Su et al. 2021) with optional linear
//! position interpolation, grouped-query attention (Ainslie et al. 2023), SwiGLU MLP (Shazeer
//! 2020), untied input and output embeddings.

use std::path::Path;

use anyhow::{bail, Result};
use memmap2::Mmap;
use tch::{Device, Kind, Tensor};

use crate::config::{Config, RopeScaling};
use crate::weights::Weights;

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// What every layer of one forward pass shares: rotary tables and the attention mask.
pub(crate) struct AttentionContext {
    b: i64,
    t: i64,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    causal: bool,
}

/// A loaded Llama model.
pub struct Llama {
    pub config: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    pub(crate) lm_head: Tensor,
    /// Rotary frequencies, already divided by the linear scaling factor.
    inv_freq: Tensor,
    device: Device,
    /// Weights may point into these memory maps.
    _maps: Vec<Mmap>,
}

/// Keys and values of the positions seen so far, per layer, for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Positions already in the cache.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` positions: the shared prefix of the next sequence to score.
    pub fn truncate(&mut self, len: i64) {
        if len >= self.len {
            return;
        }
        if len <= 0 {
            self.layers.clear();
        } else {
            for (k, v) in &mut self.layers {
                *k = k.narrow(2, 0, len);
                *v = v.narrow(2, 0, len);
            }
        }
        self.len = len.max(0);
    }

    /// The cache of a batch of one, repeated for `batch` continuations of the same prefix
    /// (broadcast views: nothing is copied until the continuations are appended).
    pub fn expand(&self, batch: i64) -> KvCache {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| {
                    (
                        k.expand([batch, -1, -1, -1], false),
                        v.expand([batch, -1, -1, -1], false),
                    )
                })
                .collect(),
            len: self.len,
        }
    }
}

impl Llama {
    /// Loads `config.json` and the safetensors weights from an HF checkpoint folder.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Llama> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut w = Weights::load(dir, device, kind)?;
        let tied = config.tie_word_embeddings && w.get("lm_head.weight").is_none();
        let mut model = Llama::assemble(config, device, tied, |name| w.take(name))?;
        model._maps = w.into_maps();
        Ok(model)
    }

    /// A new model with `transformers`' initialisation (`LlamaPreTrainedModel._init_weights`):
    /// linear and embedding weights ~ N(0, initializer_range), norm weights 1. Deterministic for
    /// a seed. (No padding row is zeroed: Llama-2 has no padding token.)
    pub fn init(config: Config, device: Device, kind: Kind, seed: i64) -> Result<Llama> {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(seed);
        let std = config.initializer_range;
        let (h, i, hd) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim,
        );
        let (q, kv) = (
            config.num_attention_heads * hd,
            config.num_key_value_heads * hd,
        );
        let vocab = config.vocab_size;
        let shape = |name: &str| -> Option<[i64; 2]> {
            let leaf = name.rsplit_once("layers.").map_or(name, |(_, rest)| {
                rest.split_once('.').map_or(rest, |(_, leaf)| leaf)
            });
            Some(match leaf {
                "model.embed_tokens.weight" | "lm_head.weight" => [vocab, h],
                "self_attn.q_proj.weight" => [q, h],
                "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => [kv, h],
                "self_attn.o_proj.weight" => [h, q],
                "mlp.gate_proj.weight" | "mlp.up_proj.weight" => [i, h],
                "mlp.down_proj.weight" => [h, i],
                _ => return None, // norms
            })
        };
        let tied = config.tie_word_embeddings;
        Llama::assemble(config, device, tied, |name| {
            Ok(match shape(name) {
                Some(s) => Tensor::randn(s, (Kind::Float, device)) * std,
                None => Tensor::ones([h], (Kind::Float, device)),
            }
            .to_kind(kind))
        })
    }

    /// Builds the model from its weights, fetched by HF name.
    fn assemble(
        config: Config,
        device: Device,
        tied: bool,
        mut take: impl FnMut(&str) -> Result<Tensor>,
    ) -> Result<Llama> {
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            let mut t = |name: &str| take(&format!("model.layers.{l}.{name}"));
            layers.push(Layer {
                input_norm: t("input_layernorm.weight")?,
                q: t("self_attn.q_proj.weight")?,
                k: t("self_attn.k_proj.weight")?,
                v: t("self_attn.v_proj.weight")?,
                o: t("self_attn.o_proj.weight")?,
                post_norm: t("post_attention_layernorm.weight")?,
                gate: t("mlp.gate_proj.weight")?,
                up: t("mlp.up_proj.weight")?,
                down: t("mlp.down_proj.weight")?,
            });
        }
        let embed = take("model.embed_tokens.weight")?;
        let norm = take("model.norm.weight")?;
        let lm_head = if tied {
            embed.shallow_clone()
        } else {
            take("lm_head.weight")?
        };
        if embed.size() != [config.vocab_size, config.hidden_size] {
            bail!(
                "embed_tokens has shape {:?}, config says [{}, {}]",
                embed.size(),
                config.vocab_size,
                config.hidden_size
            );
        }
        Ok(Llama {
            inv_freq: rotary_frequencies(&config).to_device(device),
            config,
            embed,
            layers,
            norm,
            lm_head,
            device,
            _maps: Vec::new(),
        })
    }

    /// Makes every weight a trainable leaf tensor in memory of its own (weights loaded from a
    /// checkpoint point into its read-only memory map until then). [`Llama::named_tensors`]
    /// then returns the parameters, whose `.grad()` the backward pass fills.
    pub fn make_trainable(&mut self) {
        let own = |t: &mut Tensor| {
            *t = t.detach().copy().set_requires_grad(true);
        };
        own(&mut self.embed);
        own(&mut self.norm);
        if self.config.tie_word_embeddings {
            self.lm_head = self.embed.shallow_clone();
        } else {
            own(&mut self.lm_head);
        }
        for l in &mut self.layers {
            for t in [
                &mut l.input_norm,
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.post_norm,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                own(t);
            }
        }
        self._maps.clear();
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`. With a cache, the ids
    /// continue the cached positions and the cache grows by `seq`.
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Tensor {
        self.project(&self.hidden(ids, cache))
    }

    /// Logits for packed sequences: several documents per row, `doc_ids` `[batch, seq]` says
    /// which document each position belongs to (equal ids must be contiguous). A position attends
    /// only to earlier positions of its own document, and positions restart at 0 with each
    /// document, so every document is computed as if it were alone in the row (what
    /// flash-attention's variable-length packing does in `transformers`).
    pub fn forward_packed(&self, ids: &Tensor, doc_ids: &Tensor) -> Tensor {
        self.project(&self.run(ids, None, Some(doc_ids)))
    }

    /// Final hidden states (after the last norm), before the output projection: scoring code
    /// projects only the positions it needs.
    pub fn hidden(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Tensor {
        self.run(ids, cache, None)
    }

    /// The transformer. Autograd records it when the weights require gradients (training);
    /// inference callers hold a `no_grad` guard.
    pub(crate) fn run(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        docs: Option<&Tensor>,
    ) -> Tensor {
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let ctx = self.attention_context(ids, offset, docs);
        let mut x = self.embed(ids);
        for i in 0..self.layers.len() {
            x = self.layer(i, &x, &ctx, cache.as_deref_mut());
        }
        if let Some(c) = cache {
            c.len += ctx.t;
        }
        self.final_norm(&x)
    }

    pub(crate) fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed, ids, -1, false, false)
    }

    pub(crate) fn final_norm(&self, x: &Tensor) -> Tensor {
        rms_norm(x, &self.norm, self.config.rms_norm_eps)
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Rotary tables and the attention mask for a block of `t` positions after `offset` cached
    /// ones, or for packed documents.
    pub(crate) fn attention_context(
        &self,
        ids: &Tensor,
        offset: i64,
        docs: Option<&Tensor>,
    ) -> AttentionContext {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let kind = self.embed.kind();
        // Positions: `[t]` shared by the batch, or `[b, t]` restarting with each document.
        let pos = match docs {
            None => Tensor::arange_start(offset, offset + t, (Kind::Float, self.device)),
            Some(d) => document_positions(d).to_kind(Kind::Float),
        };
        let freqs = pos.unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        let (mut cos, mut sin) = (emb.cos().to_kind(kind), emb.sin().to_kind(kind));
        if docs.is_some() {
            // [b, t, hd] -> [b, 1, t, hd], to broadcast over heads.
            cos = cos.unsqueeze(1);
            sin = sin.unsqueeze(1);
        }

        // Causal masking: implicit when the query block starts at 0; with cached positions before
        // it, each query sees the whole cache plus the block up to itself; with documents, each
        // query sees the earlier positions of its own document.
        let mask = match docs {
            Some(d) => {
                let causal = Tensor::ones([t, t], (Kind::Bool, self.device)).tril(0);
                Some(
                    d.unsqueeze(2)
                        .eq_tensor(&d.unsqueeze(1))
                        .logical_and(&causal)
                        .unsqueeze(1),
                )
            }
            None => (offset > 0 && t > 1).then(|| {
                let q = Tensor::arange_start(offset, offset + t, (Kind::Int64, self.device))
                    .unsqueeze(1);
                let k = Tensor::arange(offset + t, (Kind::Int64, self.device)).unsqueeze(0);
                k.le_tensor(&q)
            }),
        };
        let causal = mask.is_none() && t > 1;
        AttentionContext {
            b,
            t,
            cos,
            sin,
            mask,
            causal,
        }
    }

    /// Decoder layer `i`: attention and MLP, each behind an RMSNorm and a residual connection.
    // `x + a` on purpose: `+=` on a tch tensor is an in-place op, which autograd must not see.
    pub(crate) fn layer(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttentionContext,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let layer = &self.layers[i];
        let cfg = &self.config;
        let (b, t) = (ctx.b, ctx.t);
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (cos, sin) = (&ctx.cos, &ctx.sin);
        let h = rms_norm(x, &layer.input_norm, cfg.rms_norm_eps);
        let q = h
            .linear::<Tensor>(&layer.q, None)
            .view([b, t, nh, hd])
            .transpose(1, 2);
        let k = h
            .linear::<Tensor>(&layer.k, None)
            .view([b, t, nkv, hd])
            .transpose(1, 2);
        let v = h
            .linear::<Tensor>(&layer.v, None)
            .view([b, t, nkv, hd])
            .transpose(1, 2);
        let q = &q * cos + rotate_half(&q) * sin;
        let mut k = &k * cos + rotate_half(&k) * sin;
        let mut v = v;
        if let Some(c) = cache {
            if let Some((pk, pv)) = c.layers.get(i) {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            if c.layers.len() > i {
                c.layers[i] = (k.shallow_clone(), v.shallow_clone());
            } else {
                c.layers.push((k.shallow_clone(), v.shallow_clone()));
            }
        }
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            ctx.mask.as_ref(),
            0.0,
            ctx.causal,
            None,
            nkv != nh,
        );
        let a = a
            .transpose(1, 2)
            .reshape([b, t, nh * hd])
            .linear::<Tensor>(&layer.o, None);
        let x = x + a;
        let h = rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps);
        let m = h.linear::<Tensor>(&layer.gate, None).silu() * h.linear::<Tensor>(&layer.up, None);
        x + m.linear::<Tensor>(&layer.down, None)
    }

    /// Every weight under its HF name (shallow clones: no copy).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "model.embed_tokens.weight".to_string(),
                self.embed.shallow_clone(),
            ),
            ("model.norm.weight".to_string(), self.norm.shallow_clone()),
        ];
        if !self.config.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.shallow_clone()));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, t) in [
                ("input_layernorm.weight", &layer.input_norm),
                ("self_attn.q_proj.weight", &layer.q),
                ("self_attn.k_proj.weight", &layer.k),
                ("self_attn.v_proj.weight", &layer.v),
                ("self_attn.o_proj.weight", &layer.o),
                ("post_attention_layernorm.weight", &layer.post_norm),
                ("mlp.gate_proj.weight", &layer.gate),
                ("mlp.up_proj.weight", &layer.up),
                ("mlp.down_proj.weight", &layer.down),
            ] {
                out.push((format!("model.layers.{l}.{name}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Replaces every weight by `f(hf_name, weight)`, in [`Llama::named_tensors`]' order (a
    /// tied output layer follows the new input embedding). The trainer uses it to make the
    /// weights views into one flat buffer that ZeRO-1 shards.
    pub fn map_tensors(&mut self, mut f: impl FnMut(&str, &Tensor) -> Tensor) {
        self.embed = f("model.embed_tokens.weight", &self.embed);
        self.norm = f("model.norm.weight", &self.norm);
        if self.config.tie_word_embeddings {
            self.lm_head = self.embed.shallow_clone();
        } else {
            self.lm_head = f("lm_head.weight", &self.lm_head);
        }
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for (name, t) in [
                ("input_layernorm.weight", &mut layer.input_norm),
                ("self_attn.q_proj.weight", &mut layer.q),
                ("self_attn.k_proj.weight", &mut layer.k),
                ("self_attn.v_proj.weight", &mut layer.v),
                ("self_attn.o_proj.weight", &mut layer.o),
                ("post_attention_layernorm.weight", &mut layer.post_norm),
                ("mlp.gate_proj.weight", &mut layer.gate),
                ("mlp.up_proj.weight", &mut layer.up),
                ("mlp.down_proj.weight", &mut layer.down),
            ] {
                *t = f(&format!("model.layers.{l}.{name}"), t);
            }
        }
        self._maps.clear();
    }

    /// Changes the context length and the linear RoPE scaling (LeoLM's stage 2: factor 2 at 8192
    /// tokens); the rotary frequencies are recomputed, the weights stay as they are.
    pub fn set_rope_scaling(&mut self, scaling: Option<RopeScaling>, max_position_embeddings: i64) {
        self.config.rope_scaling = scaling;
        self.config.max_position_embeddings = max_position_embeddings;
        self.inv_freq = rotary_frequencies(&self.config).to_device(self.device);
    }

    /// Grows the vocabulary to `vocab_size` (after adding tokens such as ChatML's). New rows of
    /// the input and output embeddings start at the mean of the existing rows, so new tokens
    /// begin as an "average" token instead of noise (Hewitt 2021, "Initializing new word
    /// embeddings for pretrained language models"). Existing rows are unchanged.
    pub fn resize_token_embeddings(&mut self, vocab_size: i64) -> Result<()> {
        let old = self.config.vocab_size;
        if vocab_size < old {
            bail!("cannot shrink the vocabulary from {old} to {vocab_size}");
        }
        if vocab_size == old {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let grow = |w: &Tensor| {
            let mean = w.mean_dim(0, true, w.kind());
            Tensor::cat(
                &[w, &mean.expand([vocab_size - old, w.size()[1]], false)],
                0,
            )
        };
        self.embed = grow(&self.embed);
        self.lm_head = if self.config.tie_word_embeddings {
            self.embed.shallow_clone()
        } else {
            grow(&self.lm_head)
        };
        self.config.vocab_size = vocab_size;
        Ok(())
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.embed.kind()
    }

    /// Projects hidden states to logits.
    pub fn project(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<Tensor>(&self.lm_head, None)
    }

    pub(crate) fn ids_tensor(&self, ids: &[i64]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i >= self.config.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary (0..{})",
                self.config.vocab_size
            );
        }
        Ok(Tensor::from_slice(ids).to_device(self.device).unsqueeze(0))
    }
}

/// Rotary inverse frequencies `theta^(-2i/d)`, divided by the linear scaling factor, computed
/// in f32 step by step as transformers computes them: a frequency one ulp off shifts the phase
/// at position 2,000 by ~1e-4, which shows in f64 log-likelihoods.
fn rotary_frequencies(config: &Config) -> Tensor {
    let hd = config.head_dim;
    let exponents = Tensor::arange_start_step(0, hd, 2, (Kind::Float, Device::Cpu)) / hd as f64;
    let inv_freq = Tensor::from(config.rope_theta as f32)
        .pow(&exponents)
        .reciprocal();
    match config.rope_scaling {
        Some(s) => inv_freq / s.factor,
        None => inv_freq,
    }
}

/// Position of each token within its document: `[b, t]` document ids -> `[b, t]` positions
/// counting from 0 at each document's first token.
fn document_positions(docs: &Tensor) -> Tensor {
    let (b, t) = (docs.size()[0], docs.size()[1]);
    let idx = Tensor::arange(t, (Kind::Int64, docs.device()))
        .unsqueeze(0)
        .expand([b, t], false);
    let first = Tensor::ones([b, 1], (Kind::Bool, docs.device()));
    let changes = docs
        .narrow(1, 1, t - 1)
        .ne_tensor(&docs.narrow(1, 0, t - 1));
    let starts = Tensor::cat(&[first, changes], 1);
    let start_of_doc = idx.where_self(&starts, &idx.zeros_like()).cummax(1).0;
    idx - start_of_doc
}

/// RMSNorm in f32, as transformers computes it, then back to the input's dtype. In f32 that is
/// exactly libtorch's fused `rms_norm` (one kernel, one saved statistic for the backward pass);
/// in bf16/fp16 transformers rounds before the weight multiplies, so the steps are spelled out.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    if kind == Kind::Float && weight.kind() == Kind::Float {
        return x.rms_norm([x.size()[x.dim() - 1]], Some(weight), eps);
    }
    let xf = x.to_kind(Kind::Float);
    let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    let normed = (xf * (var + eps).rsqrt()).to_kind(kind);
    weight * normed
}

/// `[x1, x2] -> [-x2, x1]` over the last dimension (HF's rotate-half RoPE layout).
fn rotate_half(x: &Tensor) -> Tensor {
    let last = x.dim() as i64 - 1;
    let h = x.size()[last as usize] / 2;
    Tensor::cat(&[-x.narrow(last, h, h), x.narrow(last, 0, h)], last)
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish()
    }
}

pub(crate) fn check_len(cfg: &Config, len: i64) -> Result<()> {
    if len > cfg.max_position_embeddings {
        bail!(
            "a sequence of {len} tokens is longer than the model's context ({})",
            cfg.max_position_embeddings
        );
    }
    Ok(())
}
