//! What an `sft` stage costs, from its params alone (`leo plan`). How many tokens a chat mix
//! holds is only known once it is read and encoded, so the tokens come from the params when
//! they say: `steps` × `global_batch` × `seq_len` rows, or `epochs` × `expected_tokens` (the
//! workflow's figure for one epoch of the mix; LeoLM's German mix: 67.5M). Otherwise they are
//! data-dependent and only the parameters and the output's size are estimated.

use leo_llama::Config;
use leo_plugin::Estimate;
use leo_train::estimate;

use crate::stage::SftParams;

/// Bytes per parameter of the output model: the stage saves the trained f32 weights as they are.
const OUTPUT_BYTES_PER_PARAM: u64 = 4;

pub fn estimate_of(p: &SftParams) -> Estimate {
    let config = p
        .model
        .as_ref()
        .and_then(|m| Config::from_json(&m.to_string()).ok());
    let seq_len = p.data.seq_len as u64;
    let mut train = p.train.clone();
    let mut notes = Vec::new();
    let tokens = match (p.epochs, p.expected_tokens) {
        (None, _) => estimate::step_tokens(&train, seq_len),
        (Some(epochs), Some(per_epoch)) => {
            let tokens = (epochs * per_epoch as f64).round() as u64;
            // The steps the stage will derive, for the checkpoint count.
            if let Some(g) = train.global_batch {
                train.steps = (tokens as f64 / (g as u64 * seq_len) as f64).ceil() as u64;
            }
            notes.push(format!(
                "tokens = epochs ({epochs}) × expected_tokens ({per_epoch:.3e}); padding of packed rows not counted"
            ));
            Some(tokens)
        }
        (Some(_), None) => {
            train.checkpoint_every = 0;
            notes.push(
                "tokens data-dependent: epochs of a mix whose size is known once it is encoded (give expected_tokens to estimate)"
                    .into(),
            );
            None
        }
    };
    let mut e = estimate::training(
        config.as_ref(),
        &train,
        seq_len,
        tokens,
        OUTPUT_BYTES_PER_PARAM,
    );
    if config.is_some() {
        notes.push("parameters before the 2 ChatML embedding rows are added".into());
    }
    notes.push("attention FLOPs are an upper bound (rows are document-masked)".into());
    e.notes.extend(notes);
    e
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stage::parse;

    fn params(extra: serde_json::Value) -> serde_json::Value {
        let mut p = json!({
            "datasets": [{"input": "oasst_de"}], "epochs": 3, "global_batch": 256,
            "micro_batch": 4, "seq_len": 8192,
            "model": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                      "num_hidden_layers": 32, "num_attention_heads": 32},
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn epochs_times_the_expected_tokens_or_data_dependent() {
        let e = estimate_of(&parse(&params(json!({"expected_tokens": 67_500_000}))).unwrap());
        assert_eq!(e.tokens, Some(202_500_000));
        assert_eq!(e.parameters, Some(6_738_415_616));
        assert_eq!(e.flops_dense, Some(6.0 * 6_738_415_616.0 * 202_500_000.0));

        let e = estimate_of(&parse(&params(json!({}))).unwrap());
        assert_eq!(e.tokens, None);
        assert_eq!(e.flops_dense, None);
        assert!(
            e.notes.iter().any(|n| n.contains("data-dependent")),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn steps_give_the_tokens_of_full_rows() {
        let mut p = params(json!({"steps": 10}));
        p.as_object_mut().unwrap().remove("epochs");
        let e = estimate_of(&parse(&p).unwrap());
        assert_eq!(e.tokens, Some(10 * 256 * 8192));
    }

    #[test]
    fn model_and_expected_tokens_are_checked() {
        let e = parse(&params(json!({"model": {"hidden_size": 4}})))
            .err()
            .unwrap();
        assert_eq!(e.field, "model");
        let e = parse(&params(json!({"expected_tokens": -1})))
            .err()
            .unwrap();
        assert_eq!(e.field, "expected_tokens");
    }
}
