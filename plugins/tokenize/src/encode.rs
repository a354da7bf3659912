//! Documents to token ids with the HF `tokenizers` crate: long documents in pieces, pieces
//! in words, each step proven not to change an id.
//!
//! A tokenizer without a pre-tokenizer (Llama-2's `tokenizer.json`: normalizer
//! `Prepend("▁")` + `Replace(" ", "▁")`, BPE with byte fallback) sees a whole document as one
//! "word", and BPE over one huge word costs more per token the longer it gets
//! (huggingface/tokenizers#1449). We cut long documents after a newline and encode the pieces
//! separately; continuation pieces use a copy of the tokenizer without the leading-space
//! prepend. The ids equal whole-document encoding when [`safety`] finds, from the tokenizer's
//! own JSON, that nothing can reach across such a cut:
//!
//! - the normalizer is only `Prepend`, `Replace` of a literal without `\n`, or a sequence of
//!   those (per-character, so normalising pieces = normalising the whole), and the
//!   pre-tokenizer is none or a non-splitting `Metaspace` (continuations get `prepend_scheme =
//!   "never"`);
//! - the model is BPE without dropout, subword prefix/suffix or `ignore_merges`, and `\n`
//!   becomes one symbol (`"\n"` in the vocabulary, or the byte-fallback token `<0x0A>`) that
//!   no merge takes as either side: no token can span the cut, and since merges on each side
//!   then never see the other, BPE's (rank, position)-ordered merging runs the same on each
//!   side alone;
//! - unknown characters cannot fuse across the cut (`fuse_unk` off, or byte fallback with all
//!   256 byte tokens);
//! - added tokens are matched on the raw text (`normalized: false`): a document containing
//!   any added token's text is encoded whole, since every segment after one gets the prepend.
//!
//! Otherwise [`Encoder`] encodes every document whole and says why.
//!
//! Within a piece, words are cut before each `▁` that follows another character when
//! [`word_split`] proves no merge joins across (Llama-2: no token has a `▁` after another
//! character). Words repeat, so a per-thread cache of word → ids skips BPE for most of them.
//! tests/chunked_identity.rs checks both levels against whole-document encoding on the whole
//! shared corpus.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::AHashMap;
use aho_corasick::AhoCorasick;
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use tokenizers::{Model, ModelWrapper, OffsetReferential, OffsetType, PreTokenizer, Tokenizer};

/// Words cached per thread: about 100 bytes each, so at most ~25 MB a thread.
const WORD_CACHE_WORDS: usize = 1 << 18;
/// Longer words are rare; they go to the model directly.
const WORD_CACHE_MAX_BYTES: usize = 64;

#[derive(Default)]
struct WordCache {
    /// The [`Encoder`] the words belong to.
    owner: u64,
    words: AHashMap<Box<str>, Box<[u32]>>,
}

thread_local! {
    static WORD_CACHE: RefCell<WordCache> = RefCell::new(WordCache::default());
}

/// Gives every encoder its own id, so a thread's cache never serves another tokenizer.
static ENCODERS: AtomicU64 = AtomicU64::new(1);

/// Whether long documents are cut, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunking {
    /// Pieces of about this many bytes (UTF-8), cut after a newline.
    On(usize),
    /// The reason, for the log.
    Off(String),
}

pub struct Encoder {
    first: Tokenizer,
    /// For continuation pieces: `first` without the leading-space prepend.
    rest: Option<Tokenizer>,
    /// Texts of added tokens: documents containing one are encoded whole.
    added: Option<AhoCorasick>,
    chunking: Chunking,
    /// Words are cut before this character (see [`word_split`]).
    word_split: Option<char>,
    id: u64,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl Encoder {
    /// `chunk_bytes == 0` turns cutting off. Truncation and padding of the tokenizer file are
    /// dropped: documents are encoded whole.
    pub fn new(
        mut tokenizer: Tokenizer,
        chunk_bytes: usize,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<Encoder> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow!("turning truncation off: {e}"))?;
        tokenizer.with_padding(None);
        let json: Value = serde_json::from_str(
            &tokenizer
                .to_string(false)
                .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?,
        )
        .context("reading the tokenizer's JSON")?;
        let (chunking, rest) = if chunk_bytes == 0 {
            (Chunking::Off("params.chunk_chars is 0".into()), None)
        } else {
            match safety(&json) {
                Ok(rest_json) => {
                    let rest: Tokenizer = serde_json::from_value(rest_json)
                        .context("building the continuation tokenizer")?;
                    (Chunking::On(chunk_bytes), Some(rest))
                }
                Err(why) => (Chunking::Off(why), None),
            }
        };
        let contents: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .filter(|c| !c.is_empty())
            .collect();
        let added = if contents.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&contents).context("indexing the added tokens")?)
        };
        Ok(Encoder {
            first: tokenizer,
            rest,
            added,
            chunking,
            word_split: word_split(&json),
            id: ENCODERS.fetch_add(1, Ordering::Relaxed),
            bos,
            eos,
        })
    }

    pub fn chunking(&self) -> &Chunking {
        &self.chunking
    }

    /// The character words are cut before, when that is proven safe.
    pub fn word_split(&self) -> Option<char> {
        self.word_split
    }

    /// Turns cutting into words off (to test that it changes nothing).
    pub fn without_word_split(mut self) -> Encoder {
        self.word_split = None;
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.first
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Byte ranges of the pieces `text` is encoded in: one unless it is long and may be cut.
    pub fn pieces(&self, text: &str) -> Vec<Range<usize>> {
        let whole = std::iter::once(0..text.len()).collect();
        let Chunking::On(size) = self.chunking else {
            return whole;
        };
        if text.len() <= size || self.added.as_ref().is_some_and(|a| a.is_match(text)) {
            return whole;
        }
        cut_after_newlines(text.as_bytes(), size)
    }

    /// Ids of one piece (without BOS/EOS); `first` for the piece at the document's start.
    ///
    /// The steps of `Tokenizer::encode_fast` for one raw sequence (added tokens, normalizer,
    /// pre-tokenizer, model), minus building an `Encoding` (token strings, offsets, masks) only
    /// to read its ids: that is a tenth of the time. Post-processing without special tokens
    /// changes no ids, and truncation and padding are off.
    pub fn encode_piece(&self, piece: &str, first: bool) -> Result<Vec<u32>> {
        let tok = match (&self.rest, first) {
            (Some(rest), false) => rest,
            _ => &self.first,
        };
        let mut pre = tok
            .get_added_vocabulary()
            .extract_and_normalize(tok.get_normalizer(), piece);
        if let Some(pt) = tok.get_pre_tokenizer() {
            pt.pre_tokenize(&mut pre)
                .map_err(|e| anyhow!("pre-tokenizing: {e}"))?;
        }
        let model = tok.get_model();
        let mut ids = Vec::with_capacity(piece.len() / 3);
        let Some(space) = self.word_split else {
            pre.tokenize(|n| model.tokenize(n.get()))
                .map_err(|e| anyhow!("encoding: {e}"))?;
            for (_, _, tokens) in pre.get_splits(OffsetReferential::Normalized, OffsetType::None) {
                ids.extend(tokens.iter().flatten().map(|t| t.id));
            }
            return Ok(ids);
        };
        for (normalized, _, tokens) in
            pre.get_splits(OffsetReferential::Normalized, OffsetType::None)
        {
            match tokens {
                // An added token, already matched.
                Some(tokens) => ids.extend(tokens.iter().map(|t| t.id)),
                None => {
                    for word in words(normalized, space) {
                        self.word_ids(model, word, &mut ids)?;
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Appends the ids of one word: from this thread's cache of the encoder's words, else from
    /// the model (BPE without dropout is a function of the word, so caching changes nothing).
    /// The model's own cache stops taking words at 10,000 and hands back token strings.
    fn word_ids(&self, model: &ModelWrapper, word: &str, out: &mut Vec<u32>) -> Result<()> {
        let from_model = |out: &mut Vec<u32>| -> Result<()> {
            let tokens = model.tokenize(word).map_err(|e| anyhow!("encoding: {e}"))?;
            out.extend(tokens.iter().map(|t| t.id));
            Ok(())
        };
        if word.len() > WORD_CACHE_MAX_BYTES {
            return from_model(out);
        }
        WORD_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.owner != self.id {
                cache.owner = self.id;
                cache.words.clear();
            }
            if let Some(ids) = cache.words.get(word) {
                out.extend_from_slice(ids);
                return Ok(());
            }
            let start = out.len();
            from_model(out)?;
            if cache.words.len() >= WORD_CACHE_WORDS {
                cache.words.clear();
            }
            cache.words.insert(word.into(), out[start..].into());
            Ok(())
        })
    }

    /// Ids of `text` encoded whole by the library's own `encode_fast`, without BOS/EOS: the
    /// reference the pieces must equal.
    pub fn encode_whole(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .first
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids of one document: BOS, the text's ids, EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let pieces = self.pieces(text);
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.extend(self.bos);
        for (i, r) in pieces.into_iter().enumerate() {
            ids.extend(self.encode_piece(&text[r], i == 0)?);
        }
        ids.extend(self.eos);
        Ok(ids)
    }

    /// [`Encoder::encode`] for many documents on all rayon threads; pieces of long documents
    /// are spread over threads too. The result does not depend on the thread count.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let work: Vec<(usize, Range<usize>, bool)> = texts
            .iter()
            .enumerate()
            .flat_map(|(d, t)| {
                self.pieces(t.as_ref())
                    .into_iter()
                    .enumerate()
                    .map(move |(i, r)| (d, r, i == 0))
            })
            .collect();
        let encoded: Vec<Vec<u32>> = work
            .par_iter()
            .map(|(d, r, first)| self.encode_piece(&texts[*d].as_ref()[r.clone()], *first))
            .collect::<Result<_>>()?;
        let mut out: Vec<Vec<u32>> = (0..texts.len())
            .map(|_| self.bos.into_iter().collect())
            .collect();
        for ((d, _, _), ids) in work.iter().zip(encoded) {
            out[*d].extend(ids);
        }
        for doc in &mut out {
            doc.extend(self.eos);
        }
        Ok(out)
    }
}

/// Cuts after the last newline within each `size` bytes (or the first one after, when a line
/// is longer); never yields an empty piece.
fn cut_after_newlines(b: &[u8], size: usize) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(b.len() / size + 1);
    let mut start = 0;
    while b.len() - start > size {
        let window = &b[start..start + size];
        let cut = match memchr::memrchr(b'\n', window) {
            Some(i) => start + i + 1,
            None => match memchr::memchr(b'\n', &b[start + size..]) {
                Some(i) => start + size + i + 1,
                None => break,
            },
        };
        if cut >= b.len() {
            break;
        }
        out.push(start..cut);
        start = cut;
    }
    out.push(start..b.len());
    out
}

/// Cuts a normalised string before every `space` that follows another character, so
/// `"▁Hallo▁▁Welt\n"` gives `"▁Hallo"`, `"▁▁Welt\n"`.
fn words(s: &str, space: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut prev_space = true;
    let mut cuts = s.char_indices().filter_map(move |(i, c)| {
        let cut = c == space && !prev_space && i > 0;
        prev_space = c == space;
        cut.then_some(i)
    });
    std::iter::from_fn(move || {
        if start >= s.len() {
            return None;
        }
        let end = cuts.next().unwrap_or(s.len());
        let word = &s[start..end];
        start = end;
        Some(word)
    })
}

/// The space character (`▁`) words can be cut before without changing any id, or none.
///
/// BPE only ever builds a symbol across two characters by a merge, and every merge result is
/// a token. If no merge result holds a `▁` right after another character, and byte-fallback
/// and unknown tokens never merge (nor fuse across a cut), no symbol can span such a cut: each
/// word merges as it would inside the whole text (the argument of the module docs), and short
/// words hit the model's word cache. This is the pre-tokenization Llama-2's tokenizer.json
/// leaves out. The space is the content of a `Replace(" ", …)` normaliser or a Metaspace
/// replacement.
pub fn word_split(json: &Value) -> Option<char> {
    let model = &json["model"];
    if model["type"] != "BPE"
        || !(model["dropout"].is_null() || model["dropout"] == 0.0)
        || model["ignore_merges"] == true
        || ["continuing_subword_prefix", "end_of_word_suffix"]
            .iter()
            .any(|k| model[*k].as_str().is_some_and(|s| !s.is_empty()))
    {
        return None;
    }
    let space = space_char(&json["normalizer"]).or_else(|| match &json["pre_tokenizer"] {
        pt if pt["type"] == "Metaspace" => pt["replacement"].as_str().and_then(single_char),
        _ => None,
    })?;
    let vocab = model["vocab"].as_object()?;
    let byte_fallback = model["byte_fallback"] == true;
    let all_bytes =
        byte_fallback && (0..=255u8).all(|b| vocab.contains_key(&format!("<{b:#04X}>")));
    if model["fuse_unk"] == true && !model["unk_token"].is_null() && !all_bytes {
        return None;
    }
    let unk = model["unk_token"].as_str();
    let special = |t: &str| Some(t) == unk || (byte_fallback && is_byte_token(t));
    for m in model["merges"].as_array()? {
        let (a, b) = match m {
            Value::String(s) => s.split_once(' ')?,
            Value::Array(p) if p.len() == 2 => (p[0].as_str()?, p[1].as_str()?),
            _ => return None,
        };
        if special(a) || special(b) {
            return None;
        }
        let mut prev: Option<char> = None;
        for c in a.chars().chain(b.chars()) {
            if c == space && prev.is_some_and(|p| p != space) {
                return None;
            }
            prev = Some(c);
        }
    }
    Some(space)
}

fn space_char(n: &Value) -> Option<char> {
    match n["type"].as_str()? {
        "Replace" if n["pattern"]["String"] == " " => n["content"].as_str().and_then(single_char),
        "Sequence" => n["normalizers"].as_array()?.iter().find_map(space_char),
        _ => None,
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut it = s.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// `<0x0A>`-style byte-fallback token.
fn is_byte_token(t: &str) -> bool {
    t.len() == 6 && t.starts_with("<0x") && t.ends_with('>')
}

/// Checks that cutting after a newline cannot change the ids (see the module docs), from the
/// tokenizer's JSON. Returns the continuation tokenizer's JSON, or why cutting is unsafe.
pub fn safety(json: &Value) -> std::result::Result<Value, String> {
    let mut rest = json.clone();
    // Normalizer.
    let normalizer = &json["normalizer"];
    check_normalizer(normalizer)?;
    rest["normalizer"] = without_prepend(normalizer);
    // Pre-tokenizer.
    match &json["pre_tokenizer"] {
        Value::Null => {}
        pt if pt["type"] == "Metaspace" && pt["split"] == false => {
            rest["pre_tokenizer"]["prepend_scheme"] = "never".into();
        }
        pt if pt["type"] == "Metaspace" => {
            return Err(
                "its Metaspace pre-tokenizer splits words already, so long documents \
                        cost no more per token"
                    .into(),
            )
        }
        pt => {
            return Err(format!(
                "it has a {} pre-tokenizer (words are split already; cutting is only proven \
                 for none or a non-splitting Metaspace)",
                pt["type"].as_str().unwrap_or("?")
            ))
        }
    }
    // Model.
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(format!(
            "its model is {}, not BPE",
            model["type"].as_str().unwrap_or("?")
        ));
    }
    if !model["dropout"].is_null() && model["dropout"] != 0.0 {
        return Err("its BPE has dropout".into());
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model[key].as_str().is_some_and(|s| !s.is_empty()) {
            return Err(format!("its BPE has a {key}"));
        }
    }
    if model["ignore_merges"] == true {
        return Err("its BPE has ignore_merges".into());
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or("its BPE has no vocabulary")?;
    let byte_fallback = model["byte_fallback"] == true;
    let newline = if vocab.contains_key("\n") {
        "\n"
    } else if byte_fallback && vocab.contains_key("<0x0A>") {
        "<0x0A>"
    } else {
        return Err("a newline is an unknown token in it".into());
    };
    let all_bytes =
        byte_fallback && (0..=255u8).all(|b| vocab.contains_key(&format!("<{b:#04X}>")));
    if model["fuse_unk"] == true && !model["unk_token"].is_null() && !all_bytes {
        return Err("unknown characters may fuse across a cut (fuse_unk)".into());
    }
    let merges = model["merges"].as_array().ok_or("its BPE has no merges")?;
    for m in merges {
        let (a, b) = match m {
            Value::String(s) => s.split_once(' ').ok_or("a merge is not `a b`")?,
            Value::Array(p) if p.len() == 2 => (
                p[0].as_str().ok_or("a merge is not two strings")?,
                p[1].as_str().ok_or("a merge is not two strings")?,
            ),
            _ => return Err("a merge is neither `a b` nor [a, b]".into()),
        };
        if a == newline || b == newline {
            return Err(format!(
                "its merge `{} {}` joins the newline symbol to a neighbour",
                a.escape_debug(),
                b.escape_debug()
            ));
        }
    }
    // Added tokens: matched on raw text, so a document can be checked for them.
    if let Some(tokens) = json["added_tokens"].as_array() {
        if let Some(t) = tokens.iter().find(|t| t["normalized"] == true) {
            return Err(format!(
                "its added token {} is matched on normalised text",
                t["content"]
            ));
        }
    }
    Ok(rest)
}

fn check_normalizer(n: &Value) -> std::result::Result<(), String> {
    match n["type"].as_str() {
        None if n.is_null() => Ok(()),
        Some("Prepend") => Ok(()),
        Some("Replace") => match n["pattern"]["String"].as_str() {
            Some(p) if !p.is_empty() && !p.contains('\n') => Ok(()),
            _ => Err("its Replace normalizer has a regex or newline pattern".into()),
        },
        Some("Sequence") => n["normalizers"]
            .as_array()
            .ok_or("its normalizer sequence is not a list")?
            .iter()
            .try_for_each(check_normalizer),
        other => Err(format!(
            "its {} normalizer is not proven to work piecewise",
            other.unwrap_or("?")
        )),
    }
}

/// The normalizer with every `Prepend` removed (it only ever acts at the text's start).
fn without_prepend(n: &Value) -> Value {
    match n["type"].as_str() {
        Some("Prepend") => Value::Null,
        Some("Sequence") => {
            let mut n = n.clone();
            if let Some(list) = n["normalizers"].as_array_mut() {
                list.retain(|x| x["type"] != "Prepend");
                for x in list.iter_mut() {
                    *x = without_prepend(x);
                }
            }
            n
        }
        _ => n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_after_newlines() {
        let text = b"aaaa\nbbbb\ncccccccccccc\ndd";
        let pieces = cut_after_newlines(text, 6);
        assert_eq!(pieces, vec![0..5, 5..10, 10..23, 23..25]);
        assert_eq!(cut_after_newlines(b"abcdefgh", 3), vec![0..8]);
        assert_eq!(cut_after_newlines(b"ab\n", 1), vec![0..3]);
        let joined: Vec<u8> = pieces
            .iter()
            .flat_map(|r| text[r.clone()].to_vec())
            .collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn words_are_cut_before_spaces_that_follow_text() {
        let w: Vec<&str> = words("▁Hallo▁▁Welt\n▁x", '▁').collect();
        assert_eq!(w, ["▁Hallo", "▁▁Welt\n", "▁x"]);
        assert_eq!(words("ab", '▁').collect::<Vec<_>>(), ["ab"]);
        assert_eq!(words("▁▁", '▁').collect::<Vec<_>>(), ["▁▁"]);
        assert_eq!(words("a▁", '▁').collect::<Vec<_>>(), ["a", "▁"]);
        assert_eq!(words("", '▁').count(), 0);
    }

    #[test]
    fn word_split_needs_merges_that_keep_words_apart() {
        let mut t = serde_json::json!({
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": null,
            "model": {"type": "BPE", "dropout": null, "fuse_unk": false, "unk_token": "<unk>",
                      "byte_fallback": true, "vocab": {"<0x0A>": 3, "a": 4, "▁": 5, "▁a": 6},
                      "merges": ["▁ a", "▁ ▁"]}
        });
        assert_eq!(word_split(&t), Some('▁'));
        t["model"]["merges"] = serde_json::json!(["a ▁"]);
        assert_eq!(word_split(&t), None);
        t["model"]["merges"] = serde_json::json!([["<0x0A>", "a"]]);
        assert_eq!(word_split(&t), None);
        t["model"]["merges"] = serde_json::json!([]);
        t["normalizer"] = Value::Null;
        assert_eq!(word_split(&t), None, "no space character");
        t["pre_tokenizer"] =
            serde_json::json!({"type": "Metaspace", "replacement": "▁", "split": false});
        assert_eq!(word_split(&t), Some('▁'));
    }

    #[test]
    fn unsafe_tokenizers_are_refused() {
        let base = serde_json::json!({
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": null,
            "added_tokens": [{"content": "<s>", "normalized": false}],
            "model": {"type": "BPE", "dropout": null, "fuse_unk": true, "unk_token": "<unk>",
                      "byte_fallback": true, "vocab": {"<0x0A>": 3, "a": 4, "b": 5, "ab": 6},
                      "merges": ["a b"]}
        });
        // fuse_unk without all byte tokens.
        assert!(safety(&base).unwrap_err().contains("fuse"));
        let mut ok = base.clone();
        ok["model"]["fuse_unk"] = false.into();
        let rest = safety(&ok).unwrap();
        assert_eq!(
            rest["normalizer"]["normalizers"].as_array().unwrap().len(),
            1
        );
        let mut v = ok.clone();
        v["model"]["merges"] = serde_json::json!([["<0x0A>", "a"]]);
        assert!(safety(&v).unwrap_err().contains("newline"));
        let mut v = ok.clone();
        v["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel"});
        assert!(safety(&v).unwrap_err().contains("ByteLevel"));
        let mut v = ok.clone();
        v["normalizer"] = serde_json::json!({"type": "NFKC"});
        assert!(safety(&v).unwrap_err().contains("NFKC"));
        let mut v = ok.clone();
        v["added_tokens"][0]["normalized"] = true.into();
        assert!(safety(&v).unwrap_err().contains("normalised"));
        let mut v = ok;
        v["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "split": false,
                                                "prepend_scheme": "first", "replacement": "▁"});
        assert_eq!(
            safety(&v).unwrap()["pre_tokenizer"]["prepend_scheme"],
            "never"
        );
    }
}
