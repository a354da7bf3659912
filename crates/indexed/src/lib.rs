//! Megatron-LM indexed token datasets: a `.bin` of token ids and an `.idx` describing them, the
//! `MMIDIDX` format of `megatron/core/datasets/indexed_dataset.py` (checked against
//! megatron-core 0.16.1), so token shards leo writes train in Megatron as they are.
//!
//! `.bin`: the token ids of every sequence, back to back, little-endian, in the file's dtype.
//!
//! `.idx` (all little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 9 | magic `MMIDIDX\x00\x00` |
//! | 8 | version, u64 = 1 |
//! | 1 | dtype code, u8 (Megatron's `DType`: uint8 1, int8 2, int16 3, int32 4, int64 5, float64 6, float32 7, uint16 8) |
//! | 8 | sequence count `S`, u64 |
//! | 8 | document-index count `D + 1`, u64 (`D` documents) |
//! | 4·S | sequence lengths in tokens, i32 |
//! | 8·S | sequence pointers, byte offsets into the `.bin`, i64 |
//! | 8·(D+1) | document indices, i64: `0`, then after each document the number of sequences so far |
//!
//! A document is a run of sequences (`document_indices[d]..document_indices[d + 1]`); leo
//! writes one sequence per document. Packing into training sequences happens in the reader's
//! user (the trainer), not here.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("leo-indexed maps token files as little-endian arrays");

/// The first 9 bytes of every `.idx`.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only version Megatron writes and reads.
pub const VERSION: u64 = 1;
/// Magic, version, dtype code, sequence count, document-index count.
pub const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Token id types leo writes and reads: the two Megatron picks for a vocabulary
/// (`DType.optimal_dtype`). Megatron has no uint32; int32 holds ids below 2^31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    U16,
    I32,
}

impl DType {
    /// uint16 when every id of a `vocab_size` vocabulary fits, else int32.
    pub fn for_vocab(vocab_size: usize) -> Result<DType> {
        if vocab_size <= 1 << 16 {
            Ok(DType::U16)
        } else if vocab_size <= 1 << 31 {
            Ok(DType::I32)
        } else {
            bail!("a vocabulary of {vocab_size} tokens does not fit Megatron's int32 token files")
        }
    }

    /// Megatron's `DType` code, written into the `.idx`.
    pub fn code(self) -> u8 {
        match self {
            DType::U16 => 8,
            DType::I32 => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<DType> {
        match code {
            8 => Some(DType::U16),
            4 => Some(DType::I32),
            _ => None,
        }
    }

    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            DType::U16 => 2,
            DType::I32 => 4,
        }
    }

    /// The numpy name (`uint16`, `int32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::U16 => "uint16",
            DType::I32 => "int32",
        }
    }

    fn max_id(self) -> u64 {
        match self {
            DType::U16 => u16::MAX as u64,
            DType::I32 => i32::MAX as u64,
        }
    }
}

/// `PREFIX.bin`: Megatron names the pair by a path prefix.
pub fn bin_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".bin")
}

/// `PREFIX.idx`.
pub fn idx_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".idx")
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What a finished writer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub sequences: u64,
    pub documents: u64,
    pub tokens: u64,
}

/// Writes a `.bin` as documents arrive and the `.idx` at [`IndexedWriter::finish`]; holds only
/// 12 bytes per sequence and 8 per document in memory.
pub struct IndexedWriter {
    prefix: PathBuf,
    bin: BufWriter<File>,
    dtype: DType,
    lengths: Vec<i32>,
    document_indices: Vec<i64>,
    tokens: u64,
    buf: Vec<u8>,
}

impl IndexedWriter {
    /// Creates (truncates) `PREFIX.bin`; `PREFIX.idx` is written by `finish`.
    pub fn create(prefix: impl AsRef<Path>, dtype: DType) -> Result<IndexedWriter> {
        let prefix = prefix.as_ref().to_path_buf();
        let path = bin_path(&prefix);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(IndexedWriter {
            prefix,
            bin: BufWriter::with_capacity(1 << 20, file),
            dtype,
            lengths: Vec::new(),
            document_indices: vec![0],
            tokens: 0,
            buf: Vec::new(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Adds a document of one sequence.
    pub fn add_document(&mut self, ids: &[u32]) -> Result<()> {
        self.add_sequence(ids)?;
        self.end_document();
        Ok(())
    }

    /// Adds a sequence to the current document (Megatron's `add_item`).
    pub fn add_sequence(&mut self, ids: &[u32]) -> Result<()> {
        let len = i32::try_from(ids.len()).with_context(|| {
            format!(
                "{}: a sequence of {} tokens is longer than the format's i32 lengths",
                bin_path(&self.prefix).display(),
                ids.len()
            )
        })?;
        let max = self.dtype.max_id();
        if let Some(bad) = ids.iter().find(|&&id| u64::from(id) > max) {
            bail!(
                "{}: token id {bad} does not fit {}",
                bin_path(&self.prefix).display(),
                self.dtype.name()
            );
        }
        self.buf.clear();
        match self.dtype {
            DType::U16 => {
                for &id in ids {
                    self.buf.extend_from_slice(&(id as u16).to_le_bytes());
                }
            }
            DType::I32 => {
                for &id in ids {
                    self.buf.extend_from_slice(&(id as i32).to_le_bytes());
                }
            }
        }
        self.bin
            .write_all(&self.buf)
            .with_context(|| format!("writing {}", bin_path(&self.prefix).display()))?;
        self.lengths.push(len);
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Closes the current document: the sequences added since the last call form one document.
    pub fn end_document(&mut self) {
        self.document_indices.push(self.lengths.len() as i64);
    }

    pub fn documents(&self) -> u64 {
        (self.document_indices.len() - 1) as u64
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Flushes the `.bin` and writes the `.idx`. Sequences added after the last document end
    /// are closed as one more document.
    pub fn finish(mut self) -> Result<Summary> {
        if self.document_indices.last().copied() != Some(self.lengths.len() as i64) {
            self.end_document();
        }
        let bin = bin_path(&self.prefix);
        let file = self
            .bin
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", bin.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", bin.display()))?;

        let idx = idx_path(&self.prefix);
        let file = File::create(&idx).with_context(|| format!("creating {}", idx.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
            w.write_all(MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(&[self.dtype.code()])?;
            w.write_all(&(self.lengths.len() as u64).to_le_bytes())?;
            w.write_all(&(self.document_indices.len() as u64).to_le_bytes())?;
            for len in &self.lengths {
                w.write_all(&len.to_le_bytes())?;
            }
            let size = self.dtype.size() as i64;
            let mut pointer = 0i64;
            for &len in &self.lengths {
                w.write_all(&pointer.to_le_bytes())?;
                pointer += i64::from(len) * size;
            }
            for d in &self.document_indices {
                w.write_all(&d.to_le_bytes())?;
            }
            w.flush()?;
            w.get_ref().sync_all()
        };
        write(&mut w).with_context(|| format!("writing {}", idx.display()))?;
        Ok(Summary {
            sequences: self.lengths.len() as u64,
            documents: (self.document_indices.len() - 1) as u64,
            tokens: self.tokens,
        })
    }
}

/// A read-only file mapping; empty files are not mapped (mmap refuses length 0).
enum Mapped {
    Map(memmap2::Mmap),
    Empty,
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len == 0 {
            return Ok(Mapped::Empty);
        }
        // SAFETY: token files are immutable once written (leo's artifacts are read-only);
        // a file changed underneath a reader is outside this format's contract.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        Ok(Mapped::Map(map))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Mapped::Map(m) => m,
            Mapped::Empty => &[],
        }
    }
}

/// The token ids of one sequence, borrowed from the mapped `.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens<'a> {
    U16(&'a [u16]),
    I32(&'a [i32]),
}

impl<'a> Tokens<'a> {
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(s) => s.len(),
            Tokens::I32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `j`-th id (int32 files hold no negative ids that leo wrote; others read as-is).
    pub fn get(&self, j: usize) -> Option<u32> {
        match self {
            Tokens::U16(s) => s.get(j).map(|&t| u32::from(t)),
            Tokens::I32(s) => s.get(j).map(|&t| t as u32),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let t = *self;
        (0..t.len()).map(move |j| match t {
            Tokens::U16(s) => u32::from(s[j]),
            Tokens::I32(s) => s[j] as u32,
        })
    }

    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Tokens::U16(s) => s.iter().map(|&t| u32::from(t)).collect(),
            Tokens::I32(s) => s.iter().map(|&t| t as u32).collect(),
        }
    }

    pub fn as_u16(&self) -> Option<&'a [u16]> {
        match *self {
            Tokens::U16(s) => Some(s),
            Tokens::I32(_) => None,
        }
    }

    pub fn as_i32(&self) -> Option<&'a [i32]> {
        match *self {
            Tokens::I32(s) => Some(s),
            Tokens::U16(_) => None,
        }
    }
}

/// A memory-mapped `.bin` + `.idx` pair. [`IndexedDataset::open`] checks the whole index
/// against the `.bin`, so lookups afterwards never fail on a well-formed pair.
pub struct IndexedDataset {
    prefix: PathBuf,
    idx: Mapped,
    bin: Mapped,
    dtype: DType,
    sequences: usize,
    /// Entries of the document-index array: documents + 1.
    document_entries: usize,
    tokens: u64,
}

impl IndexedDataset {
    /// Opens `PREFIX.idx` and `PREFIX.bin`.
    pub fn open(prefix: impl AsRef<Path>) -> Result<IndexedDataset> {
        let prefix = prefix.as_ref().to_path_buf();
        let idx_file = idx_path(&prefix);
        let bin_file = bin_path(&prefix);
        let idx = Mapped::open(&idx_file)?;
        let bin = Mapped::open(&bin_file)?;
        let name = idx_file.display();
        let b = idx.bytes();
        ensure!(
            b.len() >= HEADER_LEN,
            "{name}: not a Megatron index: {} bytes, shorter than the {HEADER_LEN}-byte header",
            b.len()
        );
        ensure!(
            &b[..9] == MAGIC,
            "{name}: not a Megatron index: the file starts with {:?}, not MMIDIDX",
            String::from_utf8_lossy(&b[..9])
        );
        let version = le_u64(b, 9);
        ensure!(
            version == VERSION,
            "{name}: index version {version}; only version 1 exists"
        );
        let code = b[17];
        let dtype = DType::from_code(code).with_context(|| {
            format!(
                "{name}: dtype code {code} ({}); leo reads uint16 (8) and int32 (4) token files",
                megatron_dtype_name(code)
            )
        })?;
        let sequences = le_u64(b, 18);
        let document_entries = le_u64(b, 26);
        let want = sequences
            .checked_mul(12)
            .and_then(|s| document_entries.checked_mul(8).map(|d| (s, d)))
            .and_then(|(s, d)| s.checked_add(d))
            .and_then(|n| n.checked_add(HEADER_LEN as u64));
        ensure!(
            want.is_some_and(|w| w <= b.len() as u64),
            "{name}: the header counts {sequences} sequences and {document_entries} document \
             indices, more than the file's {} bytes hold",
            b.len()
        );
        ensure!(
            document_entries >= 1,
            "{name}: no document indices (Megatron writes at least the leading 0)"
        );
        let mut ds = IndexedDataset {
            prefix,
            idx,
            bin,
            dtype,
            sequences: sequences as usize,
            document_entries: document_entries as usize,
            tokens: 0,
        };
        ds.tokens = ds.check()?;
        Ok(ds)
    }

    /// Checks every length, pointer and document index; returns the token count.
    fn check(&self) -> Result<u64> {
        let name = idx_path(&self.prefix);
        let name = name.display();
        let bin_len = self.bin.bytes().len() as u64;
        let size = self.dtype.size() as u64;
        let mut tokens = 0u64;
        for i in 0..self.sequences {
            let len = self.raw_length(i);
            let ptr = self.raw_pointer(i);
            ensure!(len >= 0, "{name}: sequence {i} has length {len}");
            ensure!(
                ptr >= 0 && (ptr as u64).is_multiple_of(size),
                "{name}: sequence {i} starts at byte {ptr}, not a multiple of {size}"
            );
            let end = ptr as u64 + len as u64 * size;
            ensure!(
                end <= bin_len,
                "{name}: sequence {i} (bytes {ptr}..{end}) runs past the end of {} ({bin_len} bytes)",
                bin_path(&self.prefix).display()
            );
            tokens += len as u64;
        }
        let mut prev = 0i64;
        for d in 0..self.document_entries {
            let v = self.raw_document_index(d);
            ensure!(
                if d == 0 { v == 0 } else { v >= prev },
                "{name}: document index {d} is {v} after {prev}; they start at 0 and never fall"
            );
            ensure!(
                v as u64 <= self.sequences as u64,
                "{name}: document index {d} is {v}, past the {} sequences",
                self.sequences
            );
            prev = v;
        }
        ensure!(
            prev as u64 == self.sequences as u64,
            "{name}: the last document ends at sequence {prev}, not at the end ({})",
            self.sequences
        );
        Ok(tokens)
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences
    }

    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }

    /// Number of documents.
    pub fn documents(&self) -> usize {
        self.document_entries - 1
    }

    /// Tokens in all sequences.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Length of sequence `i` in tokens.
    pub fn sequence_len(&self, i: usize) -> Option<usize> {
        (i < self.sequences).then(|| self.raw_length(i) as usize)
    }

    /// The token ids of sequence `i`, borrowed from the mapping.
    pub fn get(&self, i: usize) -> Option<Tokens<'_>> {
        if i >= self.sequences {
            return None;
        }
        let start = self.raw_pointer(i) as usize;
        let len = self.raw_length(i) as usize;
        let bytes = &self.bin.bytes()[start..start + len * self.dtype.size()];
        // SAFETY: any bit pattern is a valid u16/i32; `check` made the offset a multiple of
        // the item size and the mapping is page-aligned, which the empty prefix confirms.
        Some(match self.dtype {
            DType::U16 => {
                let (pre, ids, post) = unsafe { bytes.align_to::<u16>() };
                debug_assert!(pre.is_empty() && post.is_empty());
                Tokens::U16(ids)
            }
            DType::I32 => {
                let (pre, ids, post) = unsafe { bytes.align_to::<i32>() };
                debug_assert!(pre.is_empty() && post.is_empty());
                Tokens::I32(ids)
            }
        })
    }

    /// The sequences of document `d`.
    pub fn document(&self, d: usize) -> Option<Range<usize>> {
        (d + 1 < self.document_entries)
            .then(|| self.raw_document_index(d) as usize..self.raw_document_index(d + 1) as usize)
    }

    /// The document-index array as Megatron holds it: `0`, then each document's end.
    pub fn document_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.document_entries).map(|d| self.raw_document_index(d) as usize)
    }

    fn raw_length(&self, i: usize) -> i32 {
        let b = self.idx.bytes();
        let at = HEADER_LEN + 4 * i;
        i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn raw_pointer(&self, i: usize) -> i64 {
        le_u64(self.idx.bytes(), HEADER_LEN + 4 * self.sequences + 8 * i) as i64
    }

    fn raw_document_index(&self, d: usize) -> i64 {
        le_u64(self.idx.bytes(), HEADER_LEN + 12 * self.sequences + 8 * d) as i64
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn megatron_dtype_name(code: u8) -> &'static str {
    match code {
        1 => "uint8",
        2 => "int8",
        3 => "int16",
        4 => "int32",
        5 => "int64",
        6 => "float64",
        7 => "float32",
        8 => "uint16",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<Vec<u32>> {
        vec![vec![1, 5, 65535, 2], vec![], vec![7], (0..1000).collect()]
    }

    #[test]
    fn round_trip_u16_and_i32() {
        let tmp = tempfile::tempdir().unwrap();
        for (dtype, big) in [(DType::U16, 65535), (DType::I32, 1 << 30)] {
            let prefix = tmp.path().join(format!("shard-{}", dtype.name()));
            let mut w = IndexedWriter::create(&prefix, dtype).unwrap();
            let mut want = docs();
            want[0][2] = big;
            for d in &want {
                w.add_document(d).unwrap();
            }
            let summary = w.finish().unwrap();
            assert_eq!(summary.documents, 4);
            assert_eq!(summary.tokens, 1005);
            let ds = IndexedDataset::open(&prefix).unwrap();
            assert_eq!(ds.dtype(), dtype);
            assert_eq!((ds.len(), ds.documents(), ds.tokens()), (4, 4, 1005));
            for (i, d) in want.iter().enumerate() {
                let got = ds.get(i).unwrap();
                assert_eq!(got.to_vec(), *d);
                assert_eq!(got.iter().collect::<Vec<_>>(), *d);
                assert_eq!(ds.document(i), Some(i..i + 1));
            }
            assert!(ds.get(4).is_none() && ds.document(4).is_none());
            assert_eq!(ds.document_indices().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
            assert_eq!(
                std::fs::metadata(bin_path(&prefix)).unwrap().len(),
                1005 * dtype.size() as u64
            );
        }
    }

    #[test]
    fn exact_header_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("x");
        let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
        w.add_document(&[1, 2, 3]).unwrap();
        w.add_sequence(&[4]).unwrap();
        w.add_sequence(&[5, 6]).unwrap();
        w.end_document();
        w.finish().unwrap();
        let mut want = b"MMIDIDX\x00\x00".to_vec();
        want.extend(1u64.to_le_bytes());
        want.push(8); // uint16
        want.extend(3u64.to_le_bytes()); // sequences
        want.extend(3u64.to_le_bytes()); // document indices: 0, 1, 3
        for len in [3i32, 1, 2] {
            want.extend(len.to_le_bytes());
        }
        for ptr in [0i64, 6, 8] {
            want.extend(ptr.to_le_bytes());
        }
        for d in [0i64, 1, 3] {
            want.extend(d.to_le_bytes());
        }
        assert_eq!(std::fs::read(idx_path(&prefix)).unwrap(), want);
        assert_eq!(
            std::fs::read(bin_path(&prefix)).unwrap(),
            [1u8, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0]
        );
        let ds = IndexedDataset::open(&prefix).unwrap();
        assert_eq!(ds.documents(), 2);
        assert_eq!(ds.document(1), Some(1..3));
        assert_eq!(ds.get(2).unwrap().as_u16(), Some(&[5u16, 6][..]));
    }

    #[test]
    fn empty_dataset_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("empty");
        IndexedWriter::create(&prefix, DType::U16)
            .unwrap()
            .finish()
            .unwrap();
        let ds = IndexedDataset::open(&prefix).unwrap();
        assert!(ds.is_empty());
        assert_eq!(ds.documents(), 0);
        assert_eq!(ds.document_indices().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("bad");
        let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
        w.add_document(&[1, 2]).unwrap();
        w.finish().unwrap();
        let good = std::fs::read(idx_path(&prefix)).unwrap();
        let err = |bytes: &[u8]| {
            std::fs::write(idx_path(&prefix), bytes).unwrap();
            format!("{:#}", IndexedDataset::open(&prefix).err().unwrap())
        };
        let name = idx_path(&prefix).display().to_string();
        let e = err(b"NOTANIDX\x00 and more bytes than the header has, surely");
        assert!(
            e.starts_with(&name) && e.contains("not a Megatron index"),
            "{e}"
        );
        assert!(err(&good[..20]).contains("shorter than"));
        let mut v = good.clone();
        v[17] = 5;
        assert!(err(&v).contains("dtype code 5 (int64)"), "{}", err(&v));
        let mut v = good.clone();
        v[9] = 2;
        assert!(err(&v).contains("version 2"));
        let mut v = good.clone();
        v[HEADER_LEN] = 9; // length 9 runs past the 4-byte .bin
        assert!(err(&v).contains("runs past the end"), "{}", err(&v));
        let mut v = good;
        v.truncate(v.len() - 1);
        assert!(err(&v).contains("more than the file"));
        assert!(IndexedWriter::create(tmp.path().join("u"), DType::U16)
            .unwrap()
            .add_document(&[70000])
            .unwrap_err()
            .to_string()
            .contains("does not fit uint16"));
    }

    #[test]
    fn dtype_codes_are_megatrons() {
        assert_eq!(DType::for_vocab(32000).unwrap(), DType::U16);
        assert_eq!(DType::for_vocab(65536).unwrap(), DType::U16);
        assert_eq!(DType::for_vocab(128256).unwrap(), DType::I32);
        assert_eq!((DType::U16.code(), DType::I32.code()), (8, 4));
        assert_eq!(DType::from_code(4), Some(DType::I32));
        assert_eq!(DType::from_code(1), None);
    }
}
