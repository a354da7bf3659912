//! fastText's input side in Rust: the tokens of a line and the ids of their character
//! n-grams, as `Dictionary::getLine` computes them, so the C++ library only does the
//! arithmetic (`predict_on_words`). The C++ tokenizer looks every n-gram of every word up in a
//! `std::unordered_map` (the pruned-id table of quantized models such as lid.176.ftz), which
//! was a third of the stage's time; here each distinct word's ids are computed once per
//! thread. Read from the model file: the arguments and the dictionary (fastText 0.9 format).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

const MAGIC: i32 = 793_712_314;
const EOS: &str = "</s>";

pub struct Dictionary {
    minn: usize,
    maxn: usize,
    bucket: u32,
    nwords: i32,
    /// Word (or label) → its index among the entries.
    ids: HashMap<String, i32, ahash::RandomState>,
    /// For quantized models: n-gram bucket → the row kept (absent: pruned). None: all kept.
    pruned: Option<HashMap<i32, i32, ahash::RandomState>>,
}

thread_local! {
    static CACHE: RefCell<HashMap<Box<str>, Vec<i32>, ahash::RandomState>> =
        RefCell::new(HashMap::default());
}
const CACHE_LIMIT: usize = 500_000;

impl Dictionary {
    pub fn load(path: &Path) -> Result<Dictionary> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut r = std::io::BufReader::new(file);
        let ctx = || format!("reading the fastText model {}", path.display());
        let magic = read_i32(&mut r).with_context(ctx)?;
        let version = read_i32(&mut r).with_context(ctx)?;
        if magic != MAGIC || version > 12 {
            bail!(
                "{} is not a fastText model this version reads (magic {magic}, version {version})",
                path.display()
            );
        }
        // Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate (i32), t (f64).
        let mut args = [0i32; 12];
        for a in &mut args {
            *a = read_i32(&mut r).with_context(ctx)?;
        }
        let mut t = [0u8; 8];
        r.read_exact(&mut t).with_context(ctx)?;
        let (word_ngrams, bucket, minn, maxn) = (args[5], args[8], args[9], args[10]);
        if word_ngrams > 1 {
            bail!("{}: word n-gram models (wordNgrams = {word_ngrams}) are not supported for language identification", path.display());
        }
        let size = read_i32(&mut r).with_context(ctx)?;
        let nwords = read_i32(&mut r).with_context(ctx)?;
        let _nlabels = read_i32(&mut r).with_context(ctx)?;
        let _ntokens = read_i64(&mut r).with_context(ctx)?;
        let prune_size = read_i64(&mut r).with_context(ctx)?;
        let mut ids =
            HashMap::with_capacity_and_hasher(size.max(0) as usize, ahash::RandomState::new());
        for i in 0..size {
            let mut word = Vec::new();
            loop {
                let mut b = [0u8; 1];
                r.read_exact(&mut b).with_context(ctx)?;
                if b[0] == 0 {
                    break;
                }
                word.push(b[0]);
            }
            let mut rest = [0u8; 9];
            r.read_exact(&mut rest).with_context(ctx)?;
            ids.insert(String::from_utf8_lossy(&word).into_owned(), i);
        }
        let pruned = if prune_size >= 0 {
            let mut map =
                HashMap::with_capacity_and_hasher(prune_size as usize, ahash::RandomState::new());
            for _ in 0..prune_size {
                let first = read_i32(&mut r).with_context(ctx)?;
                let second = read_i32(&mut r).with_context(ctx)?;
                map.insert(first, second);
            }
            Some(map)
        } else {
            None
        };
        Ok(Dictionary {
            minn: minn.max(0) as usize,
            maxn: maxn.max(0) as usize,
            bucket: bucket.max(1) as u32,
            nwords,
            ids,
            pruned,
        })
    }

    /// The input ids of one line of text (no newline inside), ending with the end-of-line
    /// token, as `getLine` computes them after fastText's Python API appended the newline.
    pub fn line_ids(&self, line: &str) -> Vec<i32> {
        let mut out = Vec::with_capacity(line.len() * 2);
        let tokens = line
            .split([' ', '\r', '\t', '\u{0b}', '\u{0c}', '\0'])
            .filter(|t| !t.is_empty())
            .chain(std::iter::once(EOS));
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            for token in tokens {
                if let Some(ids) = cache.get(token) {
                    out.extend_from_slice(ids);
                    continue;
                }
                let ids = self.token_ids(token);
                out.extend_from_slice(&ids);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(token.into(), ids);
            }
        });
        out
    }

    /// `addSubwords`: a known word's id and its n-grams; an unknown word's n-grams; labels
    /// contribute nothing.
    fn token_ids(&self, token: &str) -> Vec<i32> {
        let mut ids = Vec::new();
        match self.ids.get(token) {
            Some(&wid) if wid >= self.nwords => {}
            Some(&wid) => {
                ids.push(wid);
                if token != EOS {
                    self.subwords(token, &mut ids);
                }
            }
            None if token.starts_with("__label__") => {}
            None => self.subwords(token, &mut ids),
        }
        if self.maxn == 0 {
            ids.truncate(1);
        }
        ids
    }

    /// `computeSubwords` of `<token>`: character n-grams (UTF-8 aware) of lengths minn..maxn,
    /// hashed with fastText's FNV-1a (over sign-extended bytes) into `bucket`.
    fn subwords(&self, token: &str, out: &mut Vec<i32>) {
        let mut word = Vec::with_capacity(token.len() + 2);
        word.push(b'<');
        word.extend_from_slice(token.as_bytes());
        word.push(b'>');
        let cont = |b: u8| (b & 0xC0) == 0x80;
        for i in 0..word.len() {
            if cont(word[i]) {
                continue;
            }
            let mut j = i;
            let mut n = 1;
            while j < word.len() && n <= self.maxn {
                j += 1;
                while j < word.len() && cont(word[j]) {
                    j += 1;
                }
                if n >= self.minn && !(n == 1 && (i == 0 || j == word.len())) {
                    let h = (fnv(&word[i..j]) % self.bucket) as i32;
                    self.push_hash(out, h);
                }
                n += 1;
            }
        }
    }

    fn push_hash(&self, out: &mut Vec<i32>, id: i32) {
        match &self.pruned {
            None => out.push(self.nwords + id),
            Some(map) if map.is_empty() => {}
            Some(map) => {
                if let Some(&kept) = map.get(&id) {
                    out.push(self.nwords + kept);
                }
            }
        }
    }
}

/// fastText's hash: FNV-1a, with each byte sign-extended as C++ `int8_t` is.
fn fnv(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

fn read_i32(r: &mut impl Read) -> std::io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

fn read_i64(r: &mut impl Read) -> std::io::Result<i64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(i64::from_le_bytes(b))
}
