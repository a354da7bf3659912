//! Heuristic quality filters, rule for rule as datatrove implements them (its reasons name
//! the rule that dropped a document), so a workflow configured like a datatrove pipeline
//! keeps the same documents. Ratios use Python's `len()` (code points).

use ahash::{AHashMap, AHashSet};
use regex::Regex;

use crate::config;
use crate::doc::Doc;
use crate::pytext;

pub type Verdict = Result<(), String>;

fn drop(reason: &str) -> Verdict {
    Err(reason.to_string())
}

/// datatrove's PUNCTUATION_SET: ASCII and CJK punctuation, control characters, and the
/// terminal punctuation of every script (TERMINAL_PUNCTUATION).
fn is_punctuation_char(c: char) -> bool {
    let cp = c as u32;
    if cp < 128 {
        return ASCII_PUNCTUATION.with(|t| t[cp as usize]);
    }
    (127..160).contains(&cp) || non_ascii_sets().0.contains(&c)
}

/// datatrove's PUNCTUATION string (the control characters it adds are ranges in the code).
pub(crate) const PUNCTUATION: &str =
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»";
const TERMINAL: &str = "᪩？⁈𑩂．꩞𑅃﹗𑂾\u{1b7d}፧𑅂꡶꘎⁉࠾᪨𑊩𑱂᱿𖩮᥅\u{11f43}\u{11f44}﹒𑈹𑈸።܂؞꛳\u{10f88}𑗍𐩖𑙂\u{61d}꩟᠉\u{1b7e}𑗗᰼𑻸؟𑪜꧉𑗉𐽙𖫵𖬷܀꓿᜵𑗏𑁇𑗓𑥄៖𑥆𑗑𑗒꯫۔𐩗\u{10f86}꡷\u{2e54}｡៕߹⸮.𑇅࠹𛲟꫰꤯𐽗᭞𑜼፨𑃁꣏𑇟𖬸𑪛𑜾࠷𝪈?𑃀𑗃！։꣎॥𑗖᭛᠃!၊𖺘⁇𑗌𑑋𖭄᭟𑅁𑙁⸼꩝𑗋。꧈꫱𑜽𐽖𑂿᙮។꛷\u{10f89}៚᥄𑗕𑗎᪪᭚࠽𑇞𑗊𐽘\u{2e53}𑗔𖩯𑇍𑻷𐽕𑩃।𑗂𑇆𑁈။᱾𑱁꘏܁᜶‼𑈻‽᪫﹖𑑌𑈼\u{10f87}𑗐៙᰻";

thread_local! {
    /// PUNCTUATION_SET for ASCII, as a table.
    static ASCII_PUNCTUATION: [bool; 128] = {
        let mut t = [false; 128];
        for (i, slot) in t.iter_mut().enumerate() {
            let c = i as u8 as char;
            *slot = PUNCTUATION.contains(c) || TERMINAL.contains(c) || i < 9 || (11..32).contains(&i) || i == 127;
        }
        t
    };
}

/// The non-ASCII members of PUNCTUATION_SET and of TERMINAL_PUNCTUATION.
fn non_ascii_sets() -> &'static (AHashSet<char>, AHashSet<char>) {
    static SETS: std::sync::OnceLock<(AHashSet<char>, AHashSet<char>)> = std::sync::OnceLock::new();
    SETS.get_or_init(|| {
        let terminal: AHashSet<char> = TERMINAL.chars().filter(|c| !c.is_ascii()).collect();
        let mut all: AHashSet<char> = PUNCTUATION.chars().filter(|c| !c.is_ascii()).collect();
        all.extend(terminal.iter().copied());
        (all, terminal)
    })
}

/// datatrove's TERMINAL_PUNCTUATION (sentence-final marks of many scripts).
pub fn is_terminal_punctuation(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '.' | '?' | '!')
    } else {
        non_ascii_sets().1.contains(&c)
    }
}

/// Hashes of word sequences as if the words were joined into one string: n-gram
/// repetition compares joined strings, so ("ab", "c") equals ("a", "bc") as in datatrove.
/// Prefix hashes (polynomial, modulo the Mersenne prime 2^61 - 1) give any run of words in
/// O(1), with or without a separator after each word.
struct JoinHasher {
    /// Prefix hashes of the words concatenated, and their cumulative byte lengths.
    cat: Vec<u64>,
    cat_bytes: Vec<usize>,
    /// The same with a space after every word.
    sep: Vec<u64>,
    sep_bytes: Vec<usize>,
    /// Cumulative code points of the words.
    chars: Vec<usize>,
    /// BASE^k.
    pow: Vec<u64>,
}

const P61: u64 = (1 << 61) - 1;
const BASE: u64 = 0x1F3D_5B79_A3C1_E1D5 % P61;

fn mulmod(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    let s = (r as u64 & P61) + (r >> 61) as u64;
    if s >= P61 {
        s - P61
    } else {
        s
    }
}

fn addmod(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P61 {
        s - P61
    } else {
        s
    }
}

fn submod(a: u64, b: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + P61 - b
    }
}

impl JoinHasher {
    fn new(words: &[&str]) -> JoinHasher {
        let n = words.len();
        let (mut cat, mut cat_bytes) = (Vec::with_capacity(n + 1), Vec::with_capacity(n + 1));
        let (mut sep, mut sep_bytes) = (Vec::with_capacity(n + 1), Vec::with_capacity(n + 1));
        let mut chars = Vec::with_capacity(n + 1);
        let (mut h, mut hs, mut b, mut bs, mut c) = (0u64, 0u64, 0usize, 0usize, 0usize);
        cat.push(h);
        cat_bytes.push(b);
        sep.push(hs);
        sep_bytes.push(bs);
        chars.push(c);
        for w in words {
            for &byte in w.as_bytes() {
                h = addmod(mulmod(h, BASE), byte as u64 + 1);
                hs = addmod(mulmod(hs, BASE), byte as u64 + 1);
            }
            hs = addmod(mulmod(hs, BASE), b' ' as u64 + 1);
            b += w.len();
            bs += w.len() + 1;
            c += pytext::len(w);
            cat.push(h);
            cat_bytes.push(b);
            sep.push(hs);
            sep_bytes.push(bs);
            chars.push(c);
        }
        let mut pow = Vec::with_capacity(bs + 1);
        let mut p = 1u64;
        for _ in 0..=bs {
            pow.push(p);
            p = mulmod(p, BASE);
        }
        JoinHasher {
            cat,
            cat_bytes,
            sep,
            sep_bytes,
            chars,
            pow,
        }
    }

    /// A key of `words[i..i+n]` joined with spaces (or nothing), and the joined string's
    /// length in code points. Equal keys mean equal joined strings.
    fn join(&self, i: usize, n: usize, spaced: bool) -> (u64, usize) {
        let j = i + n;
        let (prefix, bytes) = if spaced {
            (&self.sep, &self.sep_bytes)
        } else {
            (&self.cat, &self.cat_bytes)
        };
        let key = submod(prefix[j], mulmod(prefix[i], self.pow[bytes[j] - bytes[i]]));
        let chars = self.chars[j] - self.chars[i] + if spaced { n - 1 } else { 0 };
        (key, chars)
    }
}

pub fn gopher_repetition(cfg: &config::GopherRepetition, doc: &mut Doc) -> Verdict {
    if doc.text.is_empty() {
        return drop("empty");
    }
    let text_len = pytext::len(&doc.text) as f64;
    let enabled = |t: Option<f64>| t.filter(|&t| t != 0.0);

    let paragraphs = pytext::split_runs(pytext::strip(&doc.text), '\n', 2);
    let (dups, chars) = pytext::find_duplicates(paragraphs.iter().copied());
    if let Some(t) = enabled(cfg.dup_para_frac) {
        if dups as f64 / paragraphs.len() as f64 > t {
            return drop("dup_para_frac");
        }
    }
    if let Some(t) = enabled(cfg.dup_para_char_frac) {
        if chars as f64 / text_len > t {
            return drop("dup_para_char_frac");
        }
    }
    let lines = pytext::split_runs(&doc.text, '\n', 1);
    let (dups, chars) = pytext::find_duplicates(lines.iter().copied());
    if let Some(t) = enabled(cfg.dup_line_frac) {
        if dups as f64 / lines.len() as f64 > t {
            return drop("dup_line_frac");
        }
    }
    if let Some(t) = enabled(cfg.dup_line_char_frac) {
        if chars as f64 / text_len > t {
            return drop("dup_line_char_frac");
        }
    }

    let words = doc.words();
    let hasher = JoinHasher::new(&words);
    for &(n, frac) in &cfg.top_n_grams {
        if words.len() < n {
            continue;
        }
        // Counter.most_common(1): the highest count, the first seen among equals.
        let mut counts: AHashMap<u64, (usize, usize, usize)> =
            AHashMap::with_capacity(words.len() - n + 1);
        for i in 0..=words.len() - n {
            let (h, chars) = hasher.join(i, n, true);
            counts.entry(h).or_insert((0, i, chars)).0 += 1;
        }
        let top = counts
            .values()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map_or(0, |&(count, _, chars)| count * chars);
        if top as f64 / text_len > frac {
            return Err(format!("top_{n}_gram"));
        }
    }
    for &(n, frac) in &cfg.dup_n_grams {
        let mut seen = AHashSet::with_capacity(words.len());
        let (mut repeated, mut i) = (0usize, 0usize);
        while i + n <= words.len() {
            let (h, chars) = hasher.join(i, n, false);
            if seen.contains(&h) {
                repeated += chars;
                i += n;
            } else {
                seen.insert(h);
                i += 1;
            }
        }
        if repeated as f64 / text_len > frac {
            return Err(format!("duplicated_{n}_n_grams"));
        }
    }
    Ok(())
}

pub fn gopher_quality(cfg: &config::GopherQuality, doc: &mut Doc) -> Verdict {
    let words = doc.words();
    let n_words = words.len() as f64;
    let non_symbol: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| w.chars().any(|c| !is_punctuation_char(c)))
        .collect();
    let n_non_symbol = non_symbol.len();
    if let Some(min) = cfg.min_doc_words.filter(|&m| m != 0) {
        if n_non_symbol < min {
            return drop("gopher_short_doc");
        }
    }
    if let Some(max) = cfg.max_doc_words.filter(|&m| m != 0) {
        if n_non_symbol > max {
            return drop("gopher_long_doc");
        }
    }
    // np.mean of nothing is NaN, and NaN fails both comparisons.
    let avg = non_symbol.iter().map(|w| pytext::len(w)).sum::<usize>() as f64 / n_non_symbol as f64;
    let on = |t: Option<f64>| t.filter(|&t| t != 0.0);
    if let Some(min) = on(cfg.min_avg_word_length) {
        if avg < min {
            return drop("gopher_below_avg_threshold");
        }
    }
    if let Some(max) = on(cfg.max_avg_word_length) {
        if avg > max {
            return drop("gopher_above_avg_threshold");
        }
    }
    let text = doc.text.as_str();
    if let Some(max) = on(cfg.max_symbol_word_ratio) {
        if pytext::count(text, "#") as f64 / n_words > max {
            return drop("gopher_too_many_hashes");
        }
        if (pytext::count(text, "...") + pytext::count(text, "…")) as f64 / n_words > max {
            return drop("gopher_too_many_ellipsis");
        }
    }
    let lines = pytext::splitlines(text);
    let n_lines = lines.len() as f64;
    if let Some(max) = on(cfg.max_bullet_lines_ratio) {
        let bullets = lines
            .iter()
            .filter(|l| {
                let l = pytext::lstrip(l);
                l.starts_with('•') || l.starts_with('-')
            })
            .count();
        if bullets as f64 / n_lines > max {
            return drop("gopher_too_many_bullets");
        }
    }
    if let Some(max) = on(cfg.max_ellipsis_lines_ratio) {
        let ellipsis = lines
            .iter()
            .filter(|l| {
                let l = pytext::rstrip(l);
                l.ends_with("...") || l.ends_with('…')
            })
            .count();
        if ellipsis as f64 / n_lines > max {
            return drop("gopher_too_many_end_ellipsis");
        }
    }
    if let Some(min) = on(cfg.max_non_alpha_words_ratio) {
        let alpha = words
            .iter()
            .filter(|w| w.chars().any(pytext::isalpha))
            .count();
        if (alpha as f64 / n_words) < min {
            return drop("gopher_below_alpha_threshold");
        }
    }
    if let Some(min) = cfg.min_stop_words.filter(|&m| m != 0) {
        let present: AHashSet<&str> = words
            .iter()
            .copied()
            .filter(|w| cfg.stop_words.iter().any(|s| s == w))
            .collect();
        if present.len() < min {
            return drop("gopher_enough_stop_words");
        }
    }
    Ok(())
}

pub fn fineweb_quality(cfg: &config::FinewebQuality, doc: &mut Doc) -> Verdict {
    let lines: Vec<&str> = doc
        .text
        .split('\n')
        .filter(|l| !pytext::strip(l).is_empty())
        .collect();
    if lines.is_empty() {
        return drop("empty");
    }
    let n = lines.len() as f64;
    let ends = lines
        .iter()
        .filter(|l| l.chars().last().is_some_and(is_terminal_punctuation))
        .count() as f64
        / n;
    if ends < cfg.line_punct_thr && !(ends == 0.0 && cfg.line_punct_exclude_zero) {
        return drop("line_punct_ratio");
    }
    let short = lines
        .iter()
        .filter(|l| pytext::len(l) <= cfg.short_line_length)
        .count() as f64
        / n;
    if short > cfg.short_line_thr {
        return drop("short_line_ratio");
    }
    let dup_chars = pytext::find_duplicates(lines.iter().copied()).1 as f64;
    let non_newline = (pytext::len(&doc.text) - pytext::count(&doc.text, "\n")) as f64;
    if dup_chars / non_newline > cfg.char_duplicates_ratio {
        return drop("char_dup_ratio");
    }
    let newlines = pytext::count(&doc.text, "\n") as f64;
    let n_words = doc.words().len() as f64;
    // datatrove divides by zero here; a document without words has no business passing.
    if n_words == 0.0 || newlines / n_words > cfg.new_line_ratio {
        return drop("list_ratio");
    }
    Ok(())
}

/// datatrove's `C4QualityFilter`: drops lines (and rewrites the text) or whole documents.
pub fn c4(cfg: &config::C4, doc: &mut Doc) -> Verdict {
    use std::sync::OnceLock;
    static CITATION: OnceLock<Regex> = OnceLock::new();
    let citation = CITATION
        .get_or_init(|| Regex::new(r"\[\d*]|\[edit]|\[citation needed]").expect("a valid pattern"));
    let tokenizer = crate::words::german();
    let text = doc.text.clone();
    let lines: Vec<String> = if cfg.split_paragraph {
        pytext::splitlines(&text)
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        split_sentences(&text)
    };
    let mut sentences = 0i64;
    let mut kept: Vec<String> = Vec::new();
    for line in lines {
        let line = pytext::strip(&line);
        let n_words = pytext::split_whitespace(line).count() as i64;
        if cfg.max_word_length != -1
            && pytext::split_whitespace(line).any(|w| pytext::len(w) as i64 > cfg.max_word_length)
        {
            continue;
        }
        let line = if cfg.remove_citations {
            citation.replace_all(line, "").into_owned()
        } else {
            line.to_string()
        };
        if cfg.filter_no_terminal_punct
            && (!line.ends_with(['.', '?', '!', '"', '\'']) || line.ends_with("..."))
        {
            continue;
        }
        if n_words < cfg.min_words_per_line {
            continue;
        }
        let lower = line.to_lowercase();
        if cfg.filter_lorem_ipsum && lower.contains("lorem ipsum") {
            return drop("lorem_ipsum");
        }
        if cfg.filter_javascript && lower.contains("javascript") {
            continue;
        }
        if cfg.filter_curly_bracket && line.contains('{') {
            return drop("curly_bracket");
        }
        if cfg.filter_policy
            && cfg
                .policy_substrings
                .iter()
                .any(|p| lower.contains(p.as_str()))
        {
            continue;
        }
        if cfg.min_num_sentences != -1 {
            sentences += if cfg.split_paragraph {
                // datatrove's split_into_sentences returns at least one part.
                tokenizer.count_sentences(&line).max(1) as i64
            } else {
                1
            };
        }
        kept.push(line);
    }
    if sentences < cfg.min_num_sentences {
        return drop("too_few_sentences");
    }
    let sep = if cfg.split_paragraph { "\n" } else { " " };
    let joined = kept.join(sep);
    doc.set_text(pytext::strip(&joined).to_string());
    Ok(())
}

/// Sentences as datatrove's `split_into_sentences` cuts them: from one sentence's end to
/// the next, the last running to the end of the text.
fn split_sentences(text: &str) -> Vec<String> {
    let ends = crate::words::german().sentence_ends(text);
    let mut cuts: Vec<usize> = ends
        .iter()
        .take(ends.len().saturating_sub(1))
        .copied()
        .collect();
    cuts.push(text.len());
    let mut start = 0;
    cuts.into_iter()
        .map(|end| {
            let part = text[start..end].to_string();
            start = end;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn doc(text: &str) -> Doc {
        Doc::new("x".into(), text.into(), Map::new(), "f".into(), 1)
    }

    #[test]
    fn punctuation_sets_like_datatrove() {
        for c in ['#', '.', '„', '…', '\u{1}', '\u{85}', '。', '؟'] {
            assert!(is_punctuation_char(c), "{c:?}");
        }
        for c in ['a', 'ä', '0', ' ', '\n', '\t', 'ß'] {
            assert!(!is_punctuation_char(c), "{c:?}");
        }
        assert!(is_terminal_punctuation('.') && is_terminal_punctuation('。'));
        assert!(!is_terminal_punctuation(',') && !is_terminal_punctuation('"'));
    }

    #[test]
    fn join_hash_equals_for_equal_joins() {
        let h = JoinHasher::new(&["ab", "c", "a", "bc"]);
        assert_eq!(h.join(0, 2, false), h.join(2, 2, false));
        assert_ne!(h.join(0, 2, true), h.join(2, 2, true));
        assert_eq!(h.join(0, 2, true).1, 4);
        let h = JoinHasher::new(&["x", "ab", "c", "y", "ab", "c"]);
        assert_eq!(h.join(1, 2, true), h.join(4, 2, true));
        assert_ne!(h.join(0, 2, true), h.join(3, 2, true));
    }

    #[test]
    fn repetition_drops_repeated_lines() {
        let cfg = config::GopherRepetition::default();
        let text = "Das ist eine Zeile.\n".repeat(10);
        assert_eq!(
            gopher_repetition(&cfg, &mut doc(&text)).unwrap_err(),
            "dup_line_frac"
        );
    }

    #[test]
    fn quality_needs_german_stop_words() {
        let cfg = config::GopherQuality::default();
        let german = "Der Hund und die Katze spielen im Garten mit dem Ball. ".repeat(8);
        assert_eq!(gopher_quality(&cfg, &mut doc(&german)), Ok(()));
        let english = "The dog and the cat play in the garden with a ball. ".repeat(8);
        assert_eq!(
            gopher_quality(&cfg, &mut doc(&english)).unwrap_err(),
            "gopher_enough_stop_words"
        );
    }

    #[test]
    fn c4_keeps_only_good_lines() {
        let cfg = config::C4 {
            enabled: true,
            min_num_sentences: 1,
            ..Default::default()
        };
        let mut d =
            doc("Menü\nDas ist ein ganzer Satz.\nWir verwenden cookies, siehe privacy policy.\n");
        assert_eq!(c4(&cfg, &mut d), Ok(()));
        assert_eq!(d.text, "Das ist ein ganzer Satz.");
    }
}
