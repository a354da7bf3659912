//! Packing encoded conversations into fixed-length rows.
//!
//! Chat conversations are short next to a training context (a few hundred tokens against
//! thousands), so one conversation per row would be mostly padding. Rows of exactly `seq_len`
//! tokens are filled greedily in the given order with whole conversations: a conversation that
//! does not fit in what is left of the row starts the next one, and the rest of the row is
//! padding (`pad_id`, labelled [`IGNORE_INDEX`]). Conversations are never split across rows,
//! since a continuation without its beginning would be trained without its context; one
//! longer than `seq_len` is cut to `seq_len` tokens (its end is lost) and counted.
//!
//! `doc_ids` numbers the conversations of a row 0, 1, 2, … and gives the padding the next
//! number, so document-masked attention ([`leo_llama::Llama::forward_packed`]) keeps every
//! conversation, and the padding, to itself and restarts positions for each. The loss cannot
//! leak across conversations either: each starts with an untrained BOS, so the last token of
//! one is never scored against the first of the next.

use anyhow::{bail, Result};

use crate::encode::{Encoded, IGNORE_INDEX};

/// One training row, all three of length `seq_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub doc_ids: Vec<i32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    pub rows: u64,
    pub conversations: u64,
    /// Conversations cut to `seq_len`.
    pub truncated: u64,
    /// Labels that are not [`IGNORE_INDEX`], after truncation.
    pub trained_tokens: u64,
    pub pad_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub rows: Vec<Row>,
    pub stats: PackStats,
}

/// Packs `encoded`, in order, into rows of `seq_len` tokens.
pub fn pack<'a>(
    encoded: impl IntoIterator<Item = &'a Encoded>,
    seq_len: usize,
    pad_id: u32,
) -> Result<Packed> {
    if seq_len == 0 || seq_len > i32::MAX as usize {
        bail!("seq_len must be between 1 and {}, not {seq_len}", i32::MAX);
    }
    let mut rows = Vec::new();
    let mut stats = PackStats::default();
    let mut row = Row::empty(seq_len);
    for e in encoded {
        if e.ids.len() != e.labels.len() {
            bail!(
                "an encoded conversation has {} ids but {} labels",
                e.ids.len(),
                e.labels.len()
            );
        }
        stats.conversations += 1;
        let mut len = e.ids.len();
        if len > seq_len {
            len = seq_len;
            stats.truncated += 1;
        }
        if row.ids.len() + len > seq_len {
            rows.push(row.finish(seq_len, pad_id, &mut stats));
            row = Row::empty(seq_len);
        }
        let doc = row.doc_ids.last().map_or(0, |d| d + 1);
        row.ids.extend_from_slice(&e.ids[..len]);
        row.labels.extend_from_slice(&e.labels[..len]);
        row.doc_ids.extend(std::iter::repeat_n(doc, len));
        stats.trained_tokens += e.labels[..len]
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .count() as u64;
    }
    if !row.ids.is_empty() {
        rows.push(row.finish(seq_len, pad_id, &mut stats));
    }
    stats.rows = rows.len() as u64;
    Ok(Packed { rows, stats })
}

impl Row {
    fn empty(seq_len: usize) -> Row {
        Row {
            ids: Vec::with_capacity(seq_len),
            labels: Vec::with_capacity(seq_len),
            doc_ids: Vec::with_capacity(seq_len),
        }
    }

    /// Pads the row to `seq_len`, the padding a document of its own.
    fn finish(mut self, seq_len: usize, pad_id: u32, stats: &mut PackStats) -> Row {
        let pad = seq_len - self.ids.len();
        // At most seq_len ≤ i32::MAX conversations per row: no overflow.
        let doc = self.doc_ids.last().map_or(0, |d| d + 1);
        self.ids.extend(std::iter::repeat_n(pad_id, pad));
        self.labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
        self.doc_ids.extend(std::iter::repeat_n(doc, pad));
        stats.pad_tokens += pad as u64;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: i64 = IGNORE_INDEX;

    /// A conversation of `n` tokens with ids `base, base+1, …`; BOS-like first token untrained.
    fn conv(base: u32, n: usize) -> Encoded {
        let ids: Vec<u32> = (0..n as u32).map(|i| base + i).collect();
        let labels = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| if i == 0 { X } else { i64::from(id) })
            .collect();
        Encoded { ids, labels }
    }

    #[test]
    fn greedy_rows_of_whole_conversations() {
        let convs = [
            conv(10, 3),
            conv(20, 2),
            conv(30, 4),
            conv(40, 1),
            conv(50, 6),
        ];
        let p = pack(&convs, 6, 0).expect("pack");
        assert_eq!(
            p.rows,
            [
                Row {
                    ids: vec![10, 11, 12, 20, 21, 0],
                    labels: vec![X, 11, 12, X, 21, X],
                    doc_ids: vec![0, 0, 0, 1, 1, 2],
                },
                Row {
                    ids: vec![30, 31, 32, 33, 40, 0],
                    labels: vec![X, 31, 32, 33, X, X],
                    doc_ids: vec![0, 0, 0, 0, 1, 2],
                },
                Row {
                    ids: vec![50, 51, 52, 53, 54, 55],
                    labels: vec![X, 51, 52, 53, 54, 55],
                    doc_ids: vec![0; 6],
                },
            ]
        );
        assert_eq!(
            p.stats,
            PackStats {
                rows: 3,
                conversations: 5,
                truncated: 0,
                // Per conversation: 2, 1, 3, 0 and 5.
                trained_tokens: 11,
                pad_tokens: 2,
            }
        );
    }

    #[test]
    fn long_conversations_are_cut_and_counted() {
        let convs = [conv(10, 2), conv(20, 7), conv(30, 2)];
        let p = pack(&convs, 4, 9).expect("pack");
        assert_eq!(
            p.rows,
            [
                Row {
                    ids: vec![10, 11, 9, 9],
                    labels: vec![X, 11, X, X],
                    doc_ids: vec![0, 0, 1, 1],
                },
                Row {
                    ids: vec![20, 21, 22, 23],
                    labels: vec![X, 21, 22, 23],
                    doc_ids: vec![0; 4],
                },
                Row {
                    ids: vec![30, 31, 9, 9],
                    labels: vec![X, 31, X, X],
                    doc_ids: vec![0, 0, 1, 1],
                },
            ]
        );
        assert_eq!(p.stats.truncated, 1);
        assert_eq!(p.stats.trained_tokens, 1 + 3 + 1);
        assert_eq!(p.stats.pad_tokens, 4);
        assert_eq!(pack(&[], 4, 0).expect("pack").rows, []);
        assert!(pack(&convs, 0, 0).is_err());
    }
}
