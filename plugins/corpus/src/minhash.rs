//! MinHash signatures exactly as datatrove computes them (`MinhashDedupSignature`): the
//! text is simplified (lower case, numbers → 0, punctuation → space, whitespace collapsed,
//! diacritics removed), split into German words, hashed as word n-grams with xxh64, and
//! each of `buckets × hashes_per_bucket` universal hash permutations `(a·x + b) mod (2^61-1)`
//! keeps its minimum. The permutation parameters come from numpy's legacy `RandomState`
//! (MT19937) with the same seed, so leo's and datatrove's signatures are equal bit for bit.
//! Locality-sensitive hashing then calls two documents candidates when all hashes of one
//! bucket agree (Broder 1997; Leskovec et al., *Mining of Massive Datasets*, ch. 3).

use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::config;
use crate::words::{self, py_isspace};

const MERSENNE: u64 = (1 << 61) - 1;

pub struct MinHasher {
    n_grams: usize,
    hashes_per_bucket: usize,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(cfg: &config::Minhash) -> MinHasher {
        let n = cfg.buckets * cfg.hashes_per_bucket;
        let mut rng = Mt19937::new(cfg.seed);
        let a = (0..n).map(|_| rng.randint_u64(1, MERSENNE)).collect();
        let b = (0..n).map(|_| rng.randint_u64(0, MERSENNE)).collect();
        MinHasher {
            n_grams: cfg.n_grams,
            hashes_per_bucket: cfg.hashes_per_bucket,
            a,
            b,
        }
    }

    /// The signature of `text`, `buckets × hashes_per_bucket` values; `None` when the text
    /// has fewer words than an n-gram (datatrove writes no signature then).
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        let simple = simplify_text(text);
        let words = words::german().words(&simple);
        if words.len() < self.n_grams {
            return None;
        }
        let mut mins = vec![u64::MAX; self.a.len()];
        let mut joined = String::new();
        for gram in words.windows(self.n_grams) {
            joined.clear();
            for (i, w) in gram.iter().enumerate() {
                if i > 0 {
                    joined.push(' ');
                }
                joined.push_str(w);
            }
            let shingle = xxhash_rust::xxh64::xxh64(joined.as_bytes(), 0);
            for ((m, &a), &b) in mins.iter_mut().zip(&self.a).zip(&self.b) {
                // numpy's uint64 arithmetic wraps before the modulo.
                let v = shingle.wrapping_mul(a).wrapping_add(b) % MERSENNE;
                if v < *m {
                    *m = v;
                }
            }
        }
        Some(mins)
    }

    pub fn hashes_per_bucket(&self) -> usize {
        self.hashes_per_bucket
    }
}

/// datatrove's `simplify_text` with its default `TextNormConfig`.
pub fn simplify_text(text: &str) -> String {
    static NUMBERS: OnceLock<Regex> = OnceLock::new();
    let numbers =
        NUMBERS.get_or_init(|| Regex::new(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?").expect("a valid pattern"));
    let lower = text.to_lowercase();
    let numbered = numbers.replace_all(&lower, "0");
    let spaced: String = numbered
        .chars()
        .map(|c| if is_normalised_punctuation(c) { ' ' } else { c })
        .collect();
    let mut collapsed = String::with_capacity(spaced.len());
    for part in spaced.split(py_isspace).filter(|p| !p.is_empty()) {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(part);
    }
    let stripped = strip_diacritics(&collapsed);
    stripped.trim_matches(py_isspace).to_string()
}

/// NFD, then without nonspacing marks (Mn). ASCII characters are starters that NFD leaves
/// alone and never reorders across, so only the runs between them are decomposed.
fn strip_diacritics(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let ascii = rest.bytes().take_while(u8::is_ascii).count();
        out.push_str(&rest[..ascii]);
        rest = &rest[ascii..];
        let other = rest.bytes().take_while(|b| !b.is_ascii()).count();
        out.extend(
            rest[..other]
                .nfd()
                .filter(|&c| !unicode_categories::UnicodeCategories::is_mark_nonspacing(c)),
        );
        rest = &rest[other..];
    }
    out
}

/// datatrove's PUNCTUATION string (not its terminal-punctuation set): what
/// `simplify_text` turns into spaces.
fn is_normalised_punctuation(c: char) -> bool {
    use crate::quality::PUNCTUATION;
    let cp = c as u32;
    PUNCTUATION.contains(c)
        || (0..9).contains(&cp)
        || (11..13).contains(&cp)
        || (13..32).contains(&cp)
        || (127..160).contains(&cp)
}

/// The Mersenne Twister as numpy's legacy `RandomState` runs it.
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.pos = 0;
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `randint(low, high, dtype=np.uint64)` for ranges wider than 32 bits: masked
    /// rejection sampling on 64-bit draws made of two 32-bit outputs, high word first.
    fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        let rng = high - 1 - low;
        let mask = u64::MAX >> rng.leading_zeros();
        loop {
            let v = ((self.next_u32() as u64) << 32 | self.next_u32() as u64) & mask;
            if v <= rng {
                return low + v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_match_numpy_random_state() {
        // numpy: RandomState(1).randint(1, 2**61-1, dtype=uint64, size=112), then (0, …).
        let h = MinHasher::new(&config::Minhash::default());
        assert_eq!(&h.a[..2], &[775169054918279404, 1758426461858698313]);
        assert_eq!(h.a[111], 223865076026037746);
        assert_eq!(&h.b[..2], &[1062448801025099917, 1324811268927594100]);
        assert_eq!(h.b[111], 1097409548522419201);
    }

    #[test]
    fn simplify_like_datatrove() {
        assert_eq!(
            simplify_text("Größe: 12,5 km — Äpfel\u{a0}und Birnen!  Café"),
            "große 0 km apfel und birnen cafe"
        );
        assert_eq!(
            xxhash_rust::xxh64::xxh64(b"das ist ein test 0", 0),
            17275565194456994298
        );
    }

    #[test]
    fn near_duplicates_share_buckets() {
        let h = MinHasher::new(&config::Minhash::default());
        let base = "Der schnelle braune Fuchs springt über den faulen Hund. ".repeat(3)
            + "Am Abend gehen alle nach Hause und essen gemeinsam.";
        let a = h.signature(&base).unwrap();
        let b = h.signature(&(base.clone() + " Ende")).unwrap();
        let same = a.chunks(8).zip(b.chunks(8)).filter(|(x, y)| x == y).count();
        assert!(same > 0);
        assert!(h.signature("zu kurz").is_none());
    }
}
