//! What a training stage costs, from its params alone (`leo plan`): the model's parameter count
//! from its shape, training FLOPs, and the bytes its checkpoints and output take.
//!
//! FLOPs per trained token, for a decoder of N parameters, L layers, attention width
//! d_attn = heads × head_dim and rows of T tokens:
//!
//! - dense: 6·N (a multiply-add is 2 FLOPs; forward 2·N, backward 4·N; Kaplan et al. 2020).
//!   N counts the embeddings too, as the usual 6·N·D figures do (LeoLM's 5.0e21 for 13B);
//!   the lookup itself costs nothing, so this overstates by 2·V·h per token (1.9% for 13B);
//! - attention scores: 6·L·d_attn·T for causal attention (QKᵀ and A·V are 2·T·d_attn
//!   multiply-adds per layer and token, half of them masked away; ×3 for forward + backward).
//!   PaLM's MFU formula (Chowdhery et al. 2022, appendix B) counts 12·L·d_attn·T, the full
//!   square; the trainer's `mfu` metric uses PaLM's. With document masking (`doc_mask`, SFT)
//!   the real cost is lower: this is an upper bound there.
//!
//! Activation recomputation (`recompute`) adds a forward pass that is not counted: MFU counts
//! useful FLOPs only.

use leo_llama::Config;
use leo_plugin::{Estimate, StorageItem};

use crate::params::TrainParams;

/// Bytes per parameter of one leo checkpoint: f32 master weights (4) and AdamW's two f32
/// moments (8), summed over the ZeRO-1 shards. Mixed precision keeps no other copy on disk.
pub const CHECKPOINT_BYTES_PER_PARAM: u64 = 12;

/// The attention-term formula in words, for the plan's reader.
pub const ATTENTION_FORMULA: &str = "6·layers·heads·head_dim·seq_len per token (causal, fwd+bwd)";

/// Parameters of a Llama of this shape, as `sum(p.numel() for p in model.parameters())`:
/// embeddings, per layer the q/k/v/o projections (k and v with `num_key_value_heads`), the
/// gate/up/down MLP and two RMSNorm weights, the final norm, and the output layer unless tied.
pub fn parameters(c: &Config) -> u64 {
    let (v, h, i) = (
        c.vocab_size as u64,
        c.hidden_size as u64,
        c.intermediate_size as u64,
    );
    let q = (c.num_attention_heads * c.head_dim) as u64;
    let kv = (c.num_key_value_heads * c.head_dim) as u64;
    let attention = h * q + 2 * h * kv + q * h;
    let mlp = 3 * h * i;
    let layer = attention + mlp + 2 * h;
    let embeddings = v * h * if c.tie_word_embeddings { 1 } else { 2 };
    embeddings + c.num_hidden_layers as u64 * layer + h
}

/// Training FLOPs for `tokens` tokens in rows of `seq_len`: (dense 6·N·D, attention).
pub fn training_flops(c: &Config, tokens: u64, seq_len: u64) -> (f64, f64) {
    let n = parameters(c) as f64;
    let d = tokens as f64;
    let width = (c.num_attention_heads * c.head_dim) as f64;
    let attention = 6.0 * c.num_hidden_layers as f64 * width * seq_len as f64;
    (6.0 * n * d, attention * d)
}

/// Checkpoints a run of `steps` updates writes with `checkpoint_every`: one every N updates but
/// none at the last (the output is saved then), as the trainer does. SIGTERM saves are extra.
pub fn checkpoints(steps: u64, checkpoint_every: u64) -> u64 {
    if checkpoint_every == 0 || steps == 0 {
        0
    } else {
        (steps - 1) / checkpoint_every
    }
}

/// The estimate of a training stage: `tokens` trained (None when the data decides), the
/// model's shape when the params give it, and `output_bytes_per_param` for the saved model.
pub fn training(
    config: Option<&Config>,
    train: &TrainParams,
    seq_len: u64,
    tokens: Option<u64>,
    output_bytes_per_param: u64,
) -> Estimate {
    let mut e = Estimate {
        tokens,
        ..Estimate::default()
    };
    let Some(c) = config else {
        e.notes.push(
            "parameters unknown: give params.model (the expected architecture of the model input)"
                .into(),
        );
        return e;
    };
    let n = parameters(c);
    e.parameters = Some(n);
    if let Some(d) = tokens {
        let (dense, attention) = training_flops(c, d, seq_len);
        e.flops_dense = Some(dense);
        e.flops_attention = Some(attention);
        e.attention_formula = Some(ATTENTION_FORMULA.into());
    }
    let count = checkpoints(train.steps, train.checkpoint_every);
    if count > 0 {
        e.storage.push(StorageItem {
            what: format!(
                "checkpoints (f32 weights + AdamW moments, {CHECKPOINT_BYTES_PER_PARAM} B/param)"
            ),
            bytes: n * CHECKPOINT_BYTES_PER_PARAM,
            count,
        });
    }
    // ZeRO-1 as leo implements it: the flat f32 weights and gradients are whole on every rank.
    e.notes.push(format!(
        "memory per rank: f32 weights + gradients, 8 B/param = {:.0} GB, plus its 1/world_size share of the moments (8 B/param in all) and activations",
        (8 * n) as f64 / 1e9
    ));
    e.storage.push(StorageItem {
        what: format!("output model ({output_bytes_per_param} B/param)"),
        bytes: n * output_bytes_per_param,
        count: 1,
    });
    e
}

/// Tokens of `steps` updates of `global_batch` rows of `seq_len`, padding included (compute is
/// spent on it); None without a global batch, which then depends on the world size.
pub fn step_tokens(train: &TrainParams, seq_len: u64) -> Option<u64> {
    train.global_batch.map(|g| train.steps * g as u64 * seq_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes of Llama-2's `config.json` files (meta-llama/Llama-2-*-hf).
    fn llama2(h: i64, i: i64, layers: i64, heads: i64, kv: i64) -> Config {
        Config::from_json(&format!(
            r#"{{"vocab_size": 32000, "hidden_size": {h}, "intermediate_size": {i},
                "num_hidden_layers": {layers}, "num_attention_heads": {heads},
                "num_key_value_heads": {kv}, "max_position_embeddings": 4096}}"#
        ))
        .unwrap()
    }

    #[test]
    fn parameters_match_the_published_llama2_counts() {
        // sum(p.numel()) of transformers' LlamaForCausalLM for each checkpoint.
        assert_eq!(parameters(&llama2(4096, 11008, 32, 32, 32)), 6_738_415_616);
        assert_eq!(parameters(&llama2(5120, 13824, 40, 40, 40)), 13_015_864_320);
        assert_eq!(parameters(&llama2(8192, 28672, 80, 64, 8)), 68_976_648_192);
        // Tied embeddings count once.
        let mut tied = llama2(4096, 11008, 32, 32, 32);
        tied.tie_word_embeddings = true;
        assert_eq!(parameters(&tied), 6_738_415_616 - 32000 * 4096);
    }

    #[test]
    fn leolm_13b_stage2_costs_what_leolm_md_says() {
        let c = llama2(5120, 13824, 40, 40, 40);
        let tokens = 15_360 * 512 * 8192;
        assert_eq!(tokens, 64_424_509_440);
        let (dense, attention) = training_flops(&c, tokens, 8192);
        // LEOLM.md: 6·N·D = 5.0e21; attention adds ~13% at 8k.
        assert!((dense / 5.0e21 - 1.0).abs() < 0.01, "{dense:e}");
        assert_eq!(dense, 6.0 * 13_015_864_320.0 * 64_424_509_440.0);
        let share = attention / dense;
        assert!((0.12..0.14).contains(&share), "{share}");
        // Per token: 6·40·5120·8192.
        assert_eq!(attention / tokens as f64, 6.0 * 40.0 * 5120.0 * 8192.0);
    }

    #[test]
    fn checkpoints_are_counted_as_the_trainer_saves_them() {
        assert_eq!(checkpoints(15_360, 500), 30);
        assert_eq!(checkpoints(1000, 500), 1, "none at the last step");
        assert_eq!(checkpoints(1001, 500), 2);
        assert_eq!(checkpoints(100, 0), 0);
    }
}
