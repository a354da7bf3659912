//! The deterministic split and shuffle, in bounded memory.
//!
//! Each document gets two 64-bit numbers from SHA-256 of the seed and its id: the first puts
//! it in validation when below `validation_fraction · 2^64`, the second is its shuffle key.
//! The output order is the documents sorted by (key, input position): a uniform permutation
//! fixed by the seed. To sort far more tokens than fit in memory, tokenized documents are
//! spilled into 64 bucket files by the key's top 6 bits; buckets are then sorted one at a
//! time (one too large is split again by the next 6 bits) and appended to shards of at most
//! `shard_tokens` tokens. Nothing depends on thread count or timing.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leo_indexed::{DType, IndexedWriter};
use serde::Serialize;
use sha2::{Digest, Sha256};

const FANOUT_BITS: u32 = 6;
const FANOUT: usize = 1 << FANOUT_BITS;
/// A bucket larger than this is split again rather than sorted in memory.
const BUCKET_BYTES: u64 = 1 << 30;
/// key u64, position u64, length u32.
const RECORD_HEADER: usize = 20;

/// Split and shuffle numbers of a document id.
pub fn keys(seed: u64, id: &str) -> (u64, u64) {
    let mut h = Sha256::new();
    h.update(b"leo-tokenize\0");
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    b.copy_from_slice(&d[8..16]);
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

/// Whether a split number falls into validation.
pub fn is_validation(split: u64, fraction: f64) -> bool {
    let threshold = if fraction >= 1.0 {
        1u128 << 64
    } else {
        (fraction.max(0.0) * 18_446_744_073_709_551_616.0) as u128
    };
    u128::from(split) < threshold
}

/// Tokenized documents of one split, spilled into bucket files.
pub struct Spill {
    dir: PathBuf,
    dtype: DType,
    buckets: Vec<BufWriter<File>>,
    pub documents: u64,
    pub tokens: u64,
    buf: Vec<u8>,
}

impl Spill {
    pub fn create(dir: &Path, dtype: DType) -> Result<Spill> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let buckets = (0..FANOUT)
            .map(|b| {
                let p = dir.join(format!("{b:02}"));
                File::create(&p)
                    .map(|f| BufWriter::with_capacity(1 << 16, f))
                    .with_context(|| format!("creating {}", p.display()))
            })
            .collect::<Result<_>>()?;
        Ok(Spill {
            dir: dir.to_path_buf(),
            dtype,
            buckets,
            documents: 0,
            tokens: 0,
            buf: Vec::new(),
        })
    }

    /// Adds a document: its shuffle key, its position in the input, its ids.
    pub fn add(&mut self, key: u64, position: u64, ids: &[u32]) -> Result<()> {
        self.buf.clear();
        encode_record(&mut self.buf, self.dtype, key, position, ids)?;
        let b = (key >> (64 - FANOUT_BITS)) as usize;
        self.buckets[b]
            .write_all(&self.buf)
            .with_context(|| format!("writing {}", self.dir.display()))?;
        self.documents += 1;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Writes the documents in shuffled order into `out/shard-NNNNN.{bin,idx}`.
    pub fn into_shards(self, out: &Path, shard_tokens: u64) -> Result<Vec<ShardInfo>> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut paths = Vec::with_capacity(FANOUT);
        for (b, w) in self.buckets.into_iter().enumerate() {
            w.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", self.dir.display()))?;
            paths.push(self.dir.join(format!("{b:02}")));
        }
        let mut shards = Shards {
            out: out.to_path_buf(),
            dtype: self.dtype,
            shard_tokens,
            current: None,
            done: Vec::new(),
            ids: Vec::new(),
        };
        for p in paths {
            drain(&p, 1, self.dtype, &mut shards)?;
        }
        shards.close()?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(shards.done)
    }
}

fn encode_record(buf: &mut Vec<u8>, dtype: DType, key: u64, pos: u64, ids: &[u32]) -> Result<()> {
    let len = u32::try_from(ids.len()).context("a document of more than 2^32 tokens")?;
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&pos.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    match dtype {
        DType::U16 => ids
            .iter()
            .for_each(|&i| buf.extend_from_slice(&(i as u16).to_le_bytes())),
        DType::I32 => ids
            .iter()
            .for_each(|&i| buf.extend_from_slice(&i.to_le_bytes())),
    }
    Ok(())
}

/// One record of a loaded bucket: key, position, where its ids start, how many.
struct Record {
    key: u64,
    pos: u64,
    at: usize,
    len: usize,
}

fn records(bytes: &[u8], dtype: DType, path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut at = 0;
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(a)
    };
    while at < bytes.len() {
        anyhow::ensure!(
            at + RECORD_HEADER <= bytes.len(),
            "{}: truncated record",
            path.display()
        );
        let mut l = [0u8; 4];
        l.copy_from_slice(&bytes[at + 16..at + 20]);
        let len = u32::from_le_bytes(l) as usize;
        let end = at + RECORD_HEADER + len * dtype.size();
        anyhow::ensure!(end <= bytes.len(), "{}: truncated record", path.display());
        out.push(Record {
            key: u64_at(at),
            pos: u64_at(at + 8),
            at: at + RECORD_HEADER,
            len,
        });
        at = end;
    }
    Ok(out)
}

/// Sorts one bucket into the shards, splitting it by the next key bits when it is too large.
fn drain(path: &Path, level: u32, dtype: DType, shards: &mut Shards) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let shift_bits = FANOUT_BITS * (level + 1);
    if size > BUCKET_BYTES && shift_bits <= 64 {
        return split_bucket(path, level, dtype, shards);
    }
    let mut bytes = Vec::with_capacity(size as usize);
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut recs = records(&bytes, dtype, path)?;
    recs.sort_unstable_by_key(|r| (r.key, r.pos));
    for r in &recs {
        shards.add(&bytes[r.at..r.at + r.len * dtype.size()])?;
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

/// Streams a bucket into 64 sub-buckets by the next key bits, then drains those in order.
fn split_bucket(path: &Path, level: u32, dtype: DType, shards: &mut Shards) -> Result<()> {
    let shift = 64 - FANOUT_BITS * (level + 1);
    let sub = |b: usize| PathBuf::from(format!("{}.{b:02}", path.display()));
    {
        let mut outs = (0..FANOUT)
            .map(|b| {
                File::create(sub(b))
                    .map(|f| BufWriter::with_capacity(1 << 16, f))
                    .with_context(|| format!("creating {}", sub(b).display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut input = std::io::BufReader::with_capacity(
            1 << 20,
            File::open(path).with_context(|| format!("opening {}", path.display()))?,
        );
        let mut header = [0u8; RECORD_HEADER];
        let mut body = Vec::new();
        loop {
            match input.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
            let mut k = [0u8; 8];
            k.copy_from_slice(&header[..8]);
            let key = u64::from_le_bytes(k);
            let mut l = [0u8; 4];
            l.copy_from_slice(&header[16..20]);
            body.resize(u32::from_le_bytes(l) as usize * dtype.size(), 0);
            input
                .read_exact(&mut body)
                .with_context(|| format!("reading {}", path.display()))?;
            let b = ((key >> shift) as usize) & (FANOUT - 1);
            let w = &mut outs[b];
            w.write_all(&header)
                .and_then(|_| w.write_all(&body))
                .with_context(|| format!("writing {}", sub(b).display()))?;
        }
        for (b, w) in outs.into_iter().enumerate() {
            w.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", sub(b).display()))?;
        }
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    for b in 0..FANOUT {
        drain(&sub(b), level + 1, dtype, shards)?;
    }
    Ok(())
}

/// What one output shard holds (for meta.json).
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    pub name: String,
    pub documents: u64,
    pub tokens: u64,
}

struct Shards {
    out: PathBuf,
    dtype: DType,
    shard_tokens: u64,
    current: Option<(String, IndexedWriter)>,
    done: Vec<ShardInfo>,
    ids: Vec<u32>,
}

impl Shards {
    /// Appends a document (its ids as little-endian bytes of the dtype); a new shard starts
    /// when this one would pass `shard_tokens` (a longer document gets a shard to itself).
    fn add(&mut self, raw: &[u8]) -> Result<()> {
        self.ids.clear();
        match self.dtype {
            DType::U16 => self.ids.extend(
                raw.chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))),
            ),
            DType::I32 => self.ids.extend(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
        let n = self.ids.len() as u64;
        if let Some((_, w)) = &self.current {
            if w.tokens() > 0 && w.tokens() + n > self.shard_tokens {
                self.close()?;
            }
        }
        if self.current.is_none() {
            let name = format!("shard-{:05}", self.done.len());
            let w = IndexedWriter::create(self.out.join(&name), self.dtype)?;
            self.current = Some((name, w));
        }
        if let Some((_, w)) = &mut self.current {
            w.add_document(&self.ids)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((name, w)) = self.current.take() {
            let s = w.finish()?;
            self.done.push(ShardInfo {
                name,
                documents: s.documents,
                tokens: s.tokens,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leo_indexed::IndexedDataset;

    #[test]
    fn keys_are_stable_and_split_by_fraction() {
        assert_eq!(keys(0, "doc-1"), keys(0, "doc-1"));
        assert_ne!(keys(0, "doc-1"), keys(1, "doc-1"));
        let n = 20_000;
        let val = (0..n)
            .filter(|i| is_validation(keys(7, &i.to_string()).0, 0.1))
            .count();
        assert!((1800..2200).contains(&val), "{val}");
        assert!(!is_validation(0, 0.0));
        assert!(is_validation(u64::MAX, 1.0));
    }

    #[test]
    fn shuffled_shards_hold_every_document_once_in_key_order() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(&tmp.path().join("spill"), DType::U16).unwrap();
        let mut want = Vec::new();
        for i in 0..500u32 {
            let (_, key) = keys(0, &i.to_string());
            let ids: Vec<u32> = (0..(i % 13)).map(|j| i * 100 + j).collect();
            spill.add(key, u64::from(i), &ids).unwrap();
            want.push((key, ids));
        }
        let shards = spill.into_shards(&tmp.path().join("out"), 300).unwrap();
        assert!(shards.len() > 5);
        assert!(!tmp.path().join("spill").exists());
        want.sort();
        let mut got = Vec::new();
        for s in &shards {
            assert!(s.tokens <= 300);
            let ds = IndexedDataset::open(tmp.path().join("out").join(&s.name)).unwrap();
            assert_eq!(ds.documents() as u64, s.documents);
            got.extend((0..ds.len()).map(|i| ds.get(i).unwrap().to_vec()));
        }
        let want: Vec<Vec<u32>> = want.into_iter().map(|(_, ids)| ids).collect();
        assert_eq!(got, want);
    }
}
