//! Weighted mixing of chat datasets and the held-out validation split.
//!
//! LeoLM fine-tuned on a mix of six German sets (LEOLM.md): small hand-written ones (poems,
//! songs) next to tens of thousands of translated instructions. A weight says how often a
//! dataset's conversations are seen per epoch: 1.0 each once, 0.5 a seeded half of them,
//! 2.5 each twice plus a seeded half (`round(fraction · n)` distinct conversations).
//!
//! The held-out split comes first and depends only on (dataset name, conversation id), hashed
//! with SHA-256 and compared with `validation_fraction · 2^64`: a conversation stays on its
//! side whatever the seed, the order of the records, the weights or the other datasets, so
//! changing the mix never leaks validation conversations into training. Held-out
//! conversations are never repeated or dropped by the weights.
//!
//! The training picks are then shuffled into one sequence: sorted by a hash of (seed,
//! dataset, id, copy), the order packing fills rows in. Everything is a pure function of the
//! inputs and the seed; pass another seed (say, derived from the epoch) for another
//! selection and order.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use crate::formats::Conversation;

/// One dataset of the mix.
#[derive(Debug, Clone, Copy)]
pub struct MixInput<'a> {
    /// Its name (the stage input's name): part of the held-out hash.
    pub name: &'a str,
    pub weight: f64,
    pub conversations: &'a [Conversation],
}

/// A conversation of the mix: `conversations[conversation]` of input `dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pick {
    pub dataset: usize,
    pub conversation: usize,
}

/// Per-dataset counts of a [`Mix`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixCounts {
    /// Conversations on the training side (before weighting).
    pub train_conversations: usize,
    /// Training samples after weighting.
    pub train_samples: usize,
    pub validation: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// Training samples in training order (weighted: a pick may repeat).
    pub train: Vec<Pick>,
    /// Held-out conversations, each once, in input order.
    pub validation: Vec<Pick>,
    /// Per input, in input order.
    pub counts: Vec<MixCounts>,
}

/// Whether a conversation is held out: SHA-256 of (dataset name, id) below
/// `fraction · 2^64`.
pub fn is_validation(dataset: &str, id: &str, fraction: f64) -> bool {
    let key = hash64(&[b"leo-sft-validation", dataset.as_bytes(), id.as_bytes()]);
    let threshold = if fraction >= 1.0 {
        1u128 << 64
    } else {
        (fraction.max(0.0) * 18_446_744_073_709_551_616.0) as u128
    };
    u128::from(key) < threshold
}

/// Splits off the held-out conversations, applies the weights and shuffles the training side.
pub fn mix(inputs: &[MixInput<'_>], validation_fraction: f64, seed: u64) -> Result<Mix> {
    if !(0.0..=1.0).contains(&validation_fraction) {
        bail!("validation_fraction must be between 0 and 1, not {validation_fraction}");
    }
    let seed = seed.to_le_bytes();
    let mut train: Vec<(u64, Pick, u32)> = Vec::new();
    let mut validation = Vec::new();
    let mut counts = Vec::with_capacity(inputs.len());
    for (d, input) in inputs.iter().enumerate() {
        if !input.weight.is_finite() || input.weight <= 0.0 {
            bail!(
                "dataset `{}`: weight must be a positive number, not {}",
                input.name,
                input.weight
            );
        }
        let mut members = Vec::new();
        for (c, conversation) in input.conversations.iter().enumerate() {
            let pick = Pick {
                dataset: d,
                conversation: c,
            };
            if is_validation(input.name, &conversation.id, validation_fraction) {
                validation.push(pick);
            } else {
                members.push(pick);
            }
        }
        let id = |p: &Pick| input.conversations[p.conversation].id.as_bytes();
        let full = input.weight.floor();
        let extra = ((input.weight - full) * members.len() as f64).round() as usize;
        let full = full as u32;
        let mut samples: Vec<(Pick, u32)> = Vec::new();
        for copy in 0..full {
            samples.extend(members.iter().map(|&p| (p, copy)));
        }
        if extra > 0 {
            let mut ranked: Vec<(u64, Pick)> = members
                .iter()
                .map(|p| {
                    (
                        hash64(&[b"leo-sft-select", &seed, input.name.as_bytes(), id(p)]),
                        *p,
                    )
                })
                .collect();
            ranked.sort_unstable();
            samples.extend(ranked.into_iter().take(extra).map(|(_, p)| (p, full)));
        }
        counts.push(MixCounts {
            train_conversations: members.len(),
            train_samples: samples.len(),
            validation: validation.iter().filter(|p| p.dataset == d).count(),
        });
        for (pick, copy) in samples {
            let key = hash64(&[
                b"leo-sft-order",
                &seed,
                input.name.as_bytes(),
                id(&pick),
                &copy.to_le_bytes(),
            ]);
            train.push((key, pick, copy));
        }
    }
    train.sort_unstable();
    Ok(Mix {
        train: train.into_iter().map(|(_, p, _)| p).collect(),
        validation,
        counts,
    })
}

/// The first 8 bytes (big-endian) of SHA-256 over the parts, each length-prefixed so that
/// different splits of the same bytes hash differently.
fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Message, Role};
    use std::collections::{HashMap, HashSet};

    fn set(prefix: &str, n: usize) -> Vec<Conversation> {
        (0..n)
            .map(|i| Conversation {
                id: format!("{prefix}-{i}"),
                messages: vec![
                    Message::new(Role::User, "f"),
                    Message::new(Role::Assistant, "a"),
                ],
            })
            .collect()
    }

    fn times(mix: &Mix, dataset: usize) -> HashMap<usize, usize> {
        let mut m = HashMap::new();
        for p in mix.train.iter().filter(|p| p.dataset == dataset) {
            *m.entry(p.conversation).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn weights_repeat_and_select() {
        let (a, b, c) = (set("a", 40), set("b", 40), set("c", 41));
        let inputs = [
            MixInput {
                name: "a",
                weight: 1.0,
                conversations: &a,
            },
            MixInput {
                name: "b",
                weight: 0.5,
                conversations: &b,
            },
            MixInput {
                name: "c",
                weight: 2.5,
                conversations: &c,
            },
        ];
        let m = mix(&inputs, 0.0, 7).expect("mix");
        assert!(m.validation.is_empty());
        let ta = times(&m, 0);
        assert_eq!(ta.len(), 40);
        assert!(ta.values().all(|&n| n == 1));
        let tb = times(&m, 1);
        assert_eq!(tb.len(), 20, "a seeded half, each at most once");
        assert!(tb.values().all(|&n| n == 1));
        let tc = times(&m, 2);
        assert_eq!(tc.len(), 41);
        assert_eq!(
            tc.values().filter(|&&n| n == 3).count(),
            21,
            "round(0.5 * 41)"
        );
        assert_eq!(tc.values().filter(|&&n| n == 2).count(), 20);
        assert_eq!(m.train.len(), 40 + 20 + 41 * 2 + 21);
        assert_eq!(
            m.counts[2],
            MixCounts {
                train_conversations: 41,
                train_samples: 103,
                validation: 0
            }
        );
        // Shuffled: the datasets interleave.
        let first_half: HashSet<usize> = m.train[..60].iter().map(|p| p.dataset).collect();
        assert_eq!(first_half.len(), 3);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (a, b) = (set("a", 50), set("b", 50));
        let inputs = [
            MixInput {
                name: "a",
                weight: 1.5,
                conversations: &a,
            },
            MixInput {
                name: "b",
                weight: 0.3,
                conversations: &b,
            },
        ];
        let one = mix(&inputs, 0.1, 3).expect("mix");
        assert_eq!(one, mix(&inputs, 0.1, 3).expect("mix"));
        let other = mix(&inputs, 0.1, 4).expect("mix");
        assert_ne!(
            one.train, other.train,
            "another seed, another order and selection"
        );
        assert_eq!(
            one.validation, other.validation,
            "the held-out split ignores the seed"
        );
        assert_eq!(one.train.len(), other.train.len());
    }

    #[test]
    fn held_out_split_is_stable_across_order_and_other_datasets() {
        let a = set("a", 2000);
        let held = |m: &Mix, convs: &[Conversation], d: usize| -> HashSet<String> {
            m.validation
                .iter()
                .filter(|p| p.dataset == d)
                .map(|p| convs[p.conversation].id.clone())
                .collect()
        };
        let alone = mix(
            &[MixInput {
                name: "a",
                weight: 1.0,
                conversations: &a,
            }],
            0.05,
            1,
        )
        .expect("mix");
        let mut reversed = a.clone();
        reversed.reverse();
        let b = set("b", 500);
        let with_b = mix(
            &[
                MixInput {
                    name: "b",
                    weight: 2.0,
                    conversations: &b,
                },
                MixInput {
                    name: "a",
                    weight: 0.5,
                    conversations: &reversed,
                },
            ],
            0.05,
            99,
        )
        .expect("mix");
        let ids = held(&alone, &a, 0);
        assert_eq!(ids, held(&with_b, &reversed, 1));
        assert!(
            (70..=130).contains(&ids.len()),
            "about 5% of 2000: {}",
            ids.len()
        );
        // Held out means never trained on.
        assert!(with_b
            .train
            .iter()
            .filter(|p| p.dataset == 1)
            .all(|p| !ids.contains(&reversed[p.conversation].id)));
        // The dataset name is part of the hash: the same ids under another name split otherwise.
        let renamed = mix(
            &[MixInput {
                name: "a2",
                weight: 1.0,
                conversations: &a,
            }],
            0.05,
            1,
        )
        .expect("mix");
        assert_ne!(ids, held(&renamed, &a, 0));
        assert!(is_validation("a", "x", 1.0));
        assert!(!is_validation("a", "x", 0.0));
    }

    #[test]
    fn bad_weights_and_fractions_are_errors() {
        let a = set("a", 2);
        let e = mix(
            &[MixInput {
                name: "a",
                weight: 0.0,
                conversations: &a,
            }],
            0.0,
            0,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "dataset `a`: weight must be a positive number, not 0"
        );
        let e = mix(
            &[MixInput {
                name: "a",
                weight: 1.0,
                conversations: &a,
            }],
            1.5,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("validation_fraction"), "{e}");
    }
}
