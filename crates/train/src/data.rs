//! Training samples and the order they are read in.
//!
//! A [`Samples`] source holds fixed-length rows (token ids, labels, document ids). The pretraining
//! source, [`PackedTokens`], packs the tokenize stage's documents back to back into rows of
//! `seq_len` tokens when they are read (GPT-2/Llama style packing, as `transformers`'
//! `group_texts` and Megatron do): nothing is written ahead of training. [`Order`] fixes which
//! row every global sample index reads, from a seed alone, so the position in the data is a
//! single number (samples consumed) and a resumed run reads exactly what the uninterrupted run
//! would have read.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use leo_indexed::IndexedDataset;

/// Labels of positions that are not scored.
pub const IGNORE: i64 = -100;

/// One training row.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ids: Vec<i64>,
    /// What each position is scored against after the shift (`labels[p + 1]` is the target of
    /// position `p`); [`IGNORE`] where nothing is scored.
    pub labels: Vec<i64>,
    /// Which document each position belongs to, for document-masked attention; none when the
    /// row attends across documents (plain causal packing).
    pub doc_ids: Option<Vec<i64>>,
}

/// A source of rows of equal length.
pub trait Samples: Send + Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn seq_len(&self) -> usize;
    fn get(&self, i: u64) -> Result<Sample>;
}

/// The documents of one or more `.bin/.idx` shards, packed into rows of `seq_len` tokens; the
/// tail that does not fill a row is dropped.
pub struct PackedTokens {
    shards: Vec<IndexedDataset>,
    /// Start of every sequence in the concatenated stream, plus the total at the end.
    starts: Vec<u64>,
    /// (shard, sequence) of each entry of `starts` but the last.
    locate: Vec<(u32, u32)>,
    seq_len: usize,
    doc_mask: bool,
}

impl PackedTokens {
    /// Opens every `*.idx`/`*.bin` pair in `dir` (name order), e.g. `tokens/train`.
    pub fn open_dir(dir: &Path, seq_len: usize, doc_mask: bool) -> Result<PackedTokens> {
        let mut prefixes: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading token shards in {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .map(|p| p.with_extension(""))
            .collect();
        prefixes.sort();
        ensure!(
            !prefixes.is_empty(),
            "{} holds no token shards (*.idx + *.bin, as the tokenize stage writes)",
            dir.display()
        );
        let shards = prefixes
            .iter()
            .map(|p| IndexedDataset::open(p).with_context(|| format!("opening {}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        PackedTokens::new(shards, seq_len, doc_mask)
    }

    pub fn new(shards: Vec<IndexedDataset>, seq_len: usize, doc_mask: bool) -> Result<Self> {
        ensure!(seq_len >= 2, "seq_len must be at least 2, got {seq_len}");
        let mut starts = vec![0u64];
        let mut locate = Vec::new();
        for (s, shard) in shards.iter().enumerate() {
            for i in 0..shard.len() {
                let len = shard.sequence_len(i).unwrap_or(0) as u64;
                if len == 0 {
                    continue;
                }
                locate.push((s as u32, i as u32));
                starts.push(starts.last().copied().unwrap_or(0) + len);
            }
        }
        Ok(PackedTokens {
            shards,
            starts,
            locate,
            seq_len,
            doc_mask,
        })
    }

    /// Tokens in all shards.
    pub fn tokens(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }
}

impl Samples for PackedTokens {
    fn len(&self) -> u64 {
        self.tokens() / self.seq_len as u64
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn get(&self, i: u64) -> Result<Sample> {
        if i >= self.len() {
            bail!("sample {i} is past the end ({} samples)", self.len());
        }
        let (from, to) = (i * self.seq_len as u64, (i + 1) * self.seq_len as u64);
        // The sequence holding token `from`: the last start <= from.
        let mut seq = self.starts.partition_point(|&s| s <= from) - 1;
        let mut ids = Vec::with_capacity(self.seq_len);
        let mut docs = Vec::with_capacity(self.seq_len);
        let mut labels = Vec::with_capacity(self.seq_len);
        let mut pos = from;
        while pos < to {
            let (s, q) = self.locate[seq];
            let tokens = self.shards[s as usize]
                .get(q as usize)
                .with_context(|| format!("sequence {q} of shard {s}"))?;
            let skip = (pos - self.starts[seq]) as usize;
            let take = ((self.starts[seq + 1] - pos) as usize).min((to - pos) as usize);
            for (j, t) in tokens.iter().skip(skip).take(take).enumerate() {
                ids.push(i64::from(t));
                docs.push(seq as i64);
                // With document masking, the first token of a document is not predicted from
                // the previous document (as transformers' DataCollatorWithFlattening does).
                // (The row's own first label is never a target.)
                let first_of_doc = skip + j == 0 && ids.len() > 1;
                labels.push(if self.doc_mask && first_of_doc {
                    IGNORE
                } else {
                    i64::from(t)
                });
            }
            pos += take as u64;
            seq += 1;
        }
        Ok(Sample {
            ids,
            labels,
            doc_ids: self.doc_mask.then_some(docs),
        })
    }
}

/// Rows held in memory (SFT: conversations packed ahead of training).
pub struct InMemory {
    pub rows: Vec<Sample>,
    pub seq_len: usize,
}

impl Samples for InMemory {
    fn len(&self) -> u64 {
        self.rows.len() as u64
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn get(&self, i: u64) -> Result<Sample> {
        self.rows
            .get(i as usize)
            .cloned()
            .with_context(|| format!("sample {i} is past the end ({} samples)", self.rows.len()))
    }
}

/// Which row each global sample index reads: epoch `e` = index / rows visits every row once in
/// a permutation drawn from (seed, e), or in stored order without shuffling.
pub struct Order {
    rows: u64,
    seed: u64,
    shuffle: bool,
    epoch: Option<(u64, Vec<u32>)>,
}

impl Order {
    pub fn new(rows: u64, seed: u64, shuffle: bool) -> Result<Order> {
        ensure!(rows > 0, "there are no training rows");
        ensure!(
            rows <= u64::from(u32::MAX),
            "{rows} rows are more than one order can index"
        );
        Ok(Order {
            rows,
            seed,
            shuffle,
            epoch: None,
        })
    }

    /// The row read at global sample index `i`.
    pub fn row(&mut self, i: u64) -> u64 {
        let (epoch, pos) = (i / self.rows, i % self.rows);
        if !self.shuffle {
            return pos;
        }
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.epoch = Some((epoch, permutation(self.rows, self.seed, epoch)));
        }
        self.epoch
            .as_ref()
            .map_or(pos, |(_, p)| u64::from(p[pos as usize]))
    }
}

/// Fisher–Yates over `0..n` driven by SplitMix64 seeded with (seed, epoch): the same on every
/// machine and rank.
fn permutation(n: u64, seed: u64, epoch: u64) -> Vec<u32> {
    let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x05EE_D1E0_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..p.len()).rev() {
        // Multiply-shift bound: unbiased enough for ordering data (bias < 2^-32 per draw).
        let j = ((u128::from(next()) * (i as u128 + 1)) >> 64) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use leo_indexed::{DType, IndexedWriter};

    fn shards(dir: &Path, docs: &[&[u32]]) -> PackedTokens {
        let prefix = dir.join("shard-00000");
        let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
        for d in docs {
            w.add_document(d).unwrap();
        }
        w.finish().unwrap();
        PackedTokens::open_dir(dir, 4, true).unwrap()
    }

    #[test]
    fn documents_are_packed_back_to_back_with_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = shards(
            dir.path(),
            &[&[1, 10, 11, 2], &[1, 20, 2], &[1, 30, 31, 32, 2]],
        );
        assert_eq!(p.tokens(), 12);
        assert_eq!(p.len(), 3);
        let s = p.get(1).unwrap();
        assert_eq!(s.ids, vec![1, 20, 2, 1]);
        assert_eq!(s.doc_ids, Some(vec![1, 1, 1, 2]));
        // The row's first token is never a target; the next document's first token is not
        // predicted across the boundary.
        assert_eq!(s.labels, vec![1, 20, 2, IGNORE]);
        let s = p.get(2).unwrap();
        assert_eq!(s.ids, vec![30, 31, 32, 2]);
        assert_eq!(s.labels, s.ids);
        assert!(p.get(3).is_err());
    }

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let mut a = Order::new(100, 7, true).unwrap();
        let mut b = Order::new(100, 7, true).unwrap();
        let first: Vec<u64> = (0..100).map(|i| a.row(i)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(first, (0..100).collect::<Vec<_>>());
        let second: Vec<u64> = (100..200).map(|i| a.row(i)).collect();
        assert_ne!(first, second);
        // Reading from the middle gives what reading from the start gives.
        assert_eq!(b.row(150), second[50]);
        assert_eq!(b.row(3), first[3]);
        let mut plain = Order::new(5, 7, false).unwrap();
        assert_eq!(plain.row(7), 2);
    }
}
