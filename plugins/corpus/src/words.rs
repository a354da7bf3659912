//! German word splitting as spaCy's `spacy.blank("de")` does it, which is what datatrove's
//! filters and MinHash use for German. Their decisions (n-gram repetition, stop words, word
//! lengths, shingles) depend on the word boundaries, so leo ports the tokenizer's algorithm
//! (spaCy `tokenizer.pyx`: whitespace split, special cases, prefix/suffix/infix rules, URLs)
//! and runs spaCy's own German rules, exported by `tools/spacy-de-export.py` into
//! `data/spacy-de.json` (spaCy is MIT-licensed), including its second pass that re-applies
//! special cases across tokens (emoticons such as `):` that punctuation rules split).

use std::cell::RefCell;
use std::collections::HashMap;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use fancy_regex::Regex;

const RULES_JSON: &str = include_str!("../data/spacy-de.json");

/// A word: a byte range of the text.
pub type Span = (usize, usize);

pub struct WordTokenizer {
    prefix: Prefixes,
    suffix: Suffixes,
    infix: Regex,
    url: Regex,
    /// Special cases: the whole string and the byte lengths of its pieces.
    specials: FastMap<String, Vec<usize>>,
    /// Special cases that other rules would split, as the tokens those rules make: spaCy
    /// looks for these token sequences after splitting and re-segments them.
    matcher: FastMap<String, Vec<Vec<String>>>,
    sentence_punct: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Rules {
    prefix: String,
    suffix: String,
    infix: String,
    url: String,
    special_cases: HashMap<String, Vec<String>>,
    sentence_punct: Vec<String>,
}

thread_local! {
    /// Tokenization of whole whitespace-separated chunks, as spaCy caches it: word
    /// frequencies are Zipfian, so most chunks are seen before.
    static CACHE: RefCell<HashMap<Box<str>, Vec<Span>, ahash::RandomState>> =
        RefCell::new(HashMap::default());
}
const CACHE_LIMIT: usize = 200_000;

/// The German tokenizer, built once per process.
pub fn german() -> &'static WordTokenizer {
    static TOKENIZER: OnceLock<WordTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        WordTokenizer::from_json(RULES_JSON).expect("the embedded spaCy German rules compile")
    })
}

impl WordTokenizer {
    pub fn from_json(json: &str) -> Result<WordTokenizer> {
        let rules: Rules = serde_json::from_str(json).context("parsing the tokenizer rules")?;
        let compile = |name: &str, pattern: &str| {
            Regex::new(&python_to_rust(pattern))
                .with_context(|| format!("compiling the {name} rules"))
        };
        let mut specials = FastMap::default();
        for (key, pieces) in rules.special_cases {
            let lens = pieces.iter().map(String::len).collect();
            specials.insert(key, lens);
        }
        let mut tokenizer = WordTokenizer {
            prefix: Prefixes::new(&python_to_rust(&rules.prefix))
                .context("compiling the prefix rules")?,
            suffix: Suffixes::new(&python_to_rust(&rules.suffix))
                .context("compiling the suffix rules")?,
            infix: compile("infix", &rules.infix)?,
            url: compile("url", &rules.url)?,
            specials,
            matcher: FastMap::default(),
            sentence_punct: rules.sentence_punct,
        };
        // As spaCy's `add_special_case` decides which special cases go to its phrase matcher.
        let mut matcher: FastMap<String, Vec<Vec<String>>> = FastMap::default();
        let mut keys: Vec<&String> = tokenizer.specials.keys().collect();
        keys.sort();
        for key in keys {
            let affixed = tokenizer.find_prefix(key) != 0
                || tokenizer.infix.find(key).ok().flatten().is_some()
                || tokenizer.find_suffix(key) != 0
                || key.contains(' ');
            if !affixed {
                continue;
            }
            let mut spans = Vec::new();
            tokenizer.tokenize_affixes(key, &mut spans, false);
            let pattern: Vec<String> = spans.iter().map(|&(a, b)| key[a..b].to_string()).collect();
            if let Some(first) = pattern.first() {
                matcher.entry(first.clone()).or_default().push(pattern);
            }
        }
        tokenizer.matcher = matcher;
        Ok(tokenizer)
    }

    /// The words of `text` as datatrove's `split_into_words` returns them: spaCy tokens
    /// without the whitespace tokens.
    pub fn words<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut spans = Vec::with_capacity(text.len() / 5);
        self.tokenize(text, &mut spans);
        spans
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .filter(|w| !w.chars().all(py_isspace))
            .collect()
    }

    /// Every spaCy token, whitespace tokens included (spaCy keeps runs of whitespace other
    /// than one plain space as tokens).
    pub fn tokenize(&self, text: &str, out: &mut Vec<Span>) {
        let start = out.len();
        self.tokenize_affixes(text, out, true);
        self.apply_special_cases(text, out, start);
    }

    /// spaCy's `_tokenize_affixes`.
    fn tokenize_affixes(&self, text: &str, out: &mut Vec<Span>, specials: bool) {
        let mut chars = text.char_indices().peekable();
        let Some(&(_, first)) = chars.peek() else {
            return;
        };
        let mut in_ws = py_isspace(first);
        let mut start = 0;
        for (i, c) in chars {
            if py_isspace(c) != in_ws {
                if start < i {
                    self.chunk(text, start, i, out, specials);
                }
                start = if c == ' ' { i + 1 } else { i };
                in_ws = !in_ws;
            }
        }
        if start < text.len() {
            self.chunk(text, start, text.len(), out, specials);
        }
    }

    /// spaCy's `_apply_special_cases`: token sequences equal to a special case's affix
    /// splitting are re-segmented as the special case says, longest matches first.
    fn apply_special_cases(&self, text: &str, tokens: &mut Vec<Span>, from: usize) {
        let toks = &tokens[from..];
        let mut matches: Vec<(usize, usize)> = Vec::new();
        for (i, &(a, b)) in toks.iter().enumerate() {
            let Some(patterns) = self.matcher.get(&text[a..b]) else {
                continue;
            };
            for pattern in patterns {
                let end = i + pattern.len();
                if end <= toks.len()
                    && pattern
                        .iter()
                        .zip(&toks[i..end])
                        .all(|(p, &(x, y))| p == &text[x..y])
                {
                    matches.push((i, end));
                }
            }
        }
        if matches.is_empty() {
            return;
        }
        // Longest first, then leftmost; a match whose first or last token was already
        // covered is dropped, and every match covers its tokens.
        matches.sort_by(|x, y| (y.1 - y.0).cmp(&(x.1 - x.0)).then(x.0.cmp(&y.0)));
        matches.dedup();
        let mut seen = vec![false; toks.len()];
        let mut chosen = Vec::new();
        for &(s, e) in &matches {
            if !seen[s] && !seen[e - 1] {
                chosen.push((s, e));
            }
            for flag in &mut seen[s..e] {
                *flag = true;
            }
        }
        chosen.sort_unstable();
        let mut rebuilt = Vec::with_capacity(toks.len());
        let mut i = 0;
        for (s, e) in chosen {
            rebuilt.extend_from_slice(&toks[i..s]);
            let (a, b) = (toks[s].0, toks[e - 1].1);
            match self.specials.get(&text[a..b]) {
                Some(lens) => push_pieces(a, lens, &mut rebuilt),
                None => rebuilt.extend_from_slice(&toks[s..e]),
            }
            i = e;
        }
        rebuilt.extend_from_slice(&toks[i..]);
        tokens.truncate(from);
        tokens.extend(rebuilt);
    }

    /// Number of sentences spaCy's `sentencizer` finds in `text`.
    pub fn count_sentences(&self, text: &str) -> usize {
        self.sentence_ends(text).len()
    }

    /// Where each sentence of spaCy's `sentencizer` ends (byte offset after its last
    /// token). A sentence ends before the first token after sentence-final punctuation
    /// that is itself no punctuation.
    pub fn sentence_ends(&self, text: &str) -> Vec<usize> {
        let mut spans = Vec::new();
        self.tokenize(text, &mut spans);
        let mut ends = Vec::new();
        let mut seen_period = false;
        for (i, &(a, b)) in spans.iter().enumerate() {
            let tok = &text[a..b];
            let in_punct = self.sentence_punct.iter().any(|p| p == tok);
            if seen_period && !in_punct && !is_punct(tok) {
                ends.push(spans[i - 1].1);
                seen_period = false;
            } else if in_punct {
                seen_period = true;
            }
        }
        if let Some(&(_, b)) = spans.last() {
            ends.push(b);
        }
        ends
    }

    /// One whitespace-delimited chunk `text[start..end]`.
    fn chunk(&self, text: &str, start: usize, end: usize, out: &mut Vec<Span>, specials: bool) {
        let s = &text[start..end];
        if !specials {
            let mut local = Vec::new();
            self.split(s, &mut local, false);
            out.extend(local.iter().map(|&(a, b)| (start + a, start + b)));
            return;
        }
        if let Some(lens) = self.specials.get(s) {
            push_pieces(start, lens, out);
            return;
        }
        if s.chars()
            .all(unicode_categories::UnicodeCategories::is_letter)
            || s.bytes().all(|b| b.is_ascii_digit())
        {
            out.push((start, end));
            return;
        }
        let cached = CACHE.with(|c| {
            c.borrow().get(s).map(|spans| {
                out.extend(spans.iter().map(|&(a, b)| (start + a, start + b)));
            })
        });
        if cached.is_some() {
            return;
        }
        let mut local = Vec::new();
        self.split(s, &mut local, true);
        out.extend(local.iter().map(|&(a, b)| (start + a, start + b)));
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(s.into(), local);
        });
    }

    /// spaCy's `_split_affixes` then `_attach_tokens`, on byte offsets into `s`.
    fn split(&self, s: &str, out: &mut Vec<Span>, with_specials: bool) {
        let special = |x: &str| with_specials && self.specials.contains_key(x);
        let (mut a, mut b) = (0, s.len());
        let mut prefixes: Vec<Span> = Vec::new();
        let mut suffixes: Vec<Span> = Vec::new();
        let mut last_len = usize::MAX;
        while a < b && b - a != last_len {
            if special(&s[a..b]) {
                break;
            }
            last_len = b - a;
            let pre = self.find_prefix(&s[a..b]);
            if pre != 0 && a + pre < b && special(&s[a + pre..b]) {
                prefixes.push((a, a + pre));
                a += pre;
                break;
            }
            let suf = self.find_suffix(&s[a + pre..b]);
            if suf != 0 && a < b - suf && special(&s[a..b - suf]) {
                suffixes.push((b - suf, b));
                b -= suf;
                break;
            }
            if pre != 0 && suf != 0 && pre + suf <= b - a {
                prefixes.push((a, a + pre));
                suffixes.push((b - suf, b));
                a += pre;
                b -= suf;
            } else if pre != 0 {
                prefixes.push((a, a + pre));
                a += pre;
            } else if suf != 0 {
                suffixes.push((b - suf, b));
                b -= suf;
            }
            if special(&s[a..b]) {
                break;
            }
        }
        out.extend_from_slice(&prefixes);
        if a < b {
            let rest = &s[a..b];
            if let Some(lens) = self.specials.get(rest).filter(|_| with_specials) {
                push_pieces(a, lens, out);
            } else if rest.contains('.') && self.url.is_match(rest).unwrap_or(false) {
                // Every host alternative of the URL pattern has a dot.
                out.push((a, b));
            } else if rest.chars().all(|c| is_letter(c) || c.is_ascii_digit()) {
                // Every infix consumes punctuation or a symbol.
                out.push((a, b));
            } else {
                let mut start = 0;
                let mut any = false;
                for m in self.infix.find_iter(rest).flatten() {
                    any = true;
                    // spaCy skips an infix at the very start of the string.
                    if m.start() == 0 {
                        continue;
                    }
                    if m.start() != start {
                        out.push((a + start, a + m.start()));
                    }
                    if m.start() != m.end() {
                        out.push((a + m.start(), a + m.end()));
                    }
                    start = m.end();
                }
                if !any {
                    out.push((a, b));
                } else if start < rest.len() {
                    out.push((a + start, b));
                }
            }
        }
        out.extend(suffixes.iter().rev());
    }

    fn find_prefix(&self, s: &str) -> usize {
        self.prefix.find(s)
    }

    fn find_suffix(&self, s: &str) -> usize {
        self.suffix.find(s)
    }
}

/// spaCy's prefix search, `^a|^b|…`: the first alternative (in order) that matches at the
/// start. Runs of plain alternatives go to the `regex` crate (a DFA, leftmost-first keeps
/// their order); only alternatives with lookaround use the backtracking `fancy_regex`.
struct Prefixes {
    runs: Vec<Matcher>,
}

enum Matcher {
    Plain(regex::Regex),
    /// A lookaround alternative; it can only match text starting with the character, when
    /// the alternative begins with a literal one (`^\+(?![0-9])`).
    Fancy(Regex, Option<char>),
}

impl Prefixes {
    fn new(pattern: &str) -> Result<Prefixes> {
        let alternatives = split_alternatives(pattern);
        if !alternatives.iter().all(|a| a.starts_with('^')) {
            return Ok(Prefixes {
                runs: vec![Matcher::Fancy(Regex::new(pattern)?, None)],
            });
        }
        let mut runs = Vec::new();
        let mut plain: Vec<&str> = Vec::new();
        for alt in alternatives {
            if has_lookaround(alt) {
                if !plain.is_empty() {
                    runs.push(Matcher::Plain(regex::Regex::new(&plain.join("|"))?));
                    plain.clear();
                }
                runs.push(Matcher::Fancy(Regex::new(alt)?, leading_literal(alt)));
            } else {
                plain.push(alt);
            }
        }
        if !plain.is_empty() {
            runs.push(Matcher::Plain(regex::Regex::new(&plain.join("|"))?));
        }
        Ok(Prefixes { runs })
    }

    fn find(&self, s: &str) -> usize {
        for run in &self.runs {
            let found = match run {
                Matcher::Plain(re) => re.find(s).map(|m| m.len()),
                Matcher::Fancy(_, Some(first)) if !s.starts_with(*first) => None,
                Matcher::Fancy(re, _) => re.find(s).ok().flatten().map(|m| m.end() - m.start()),
            };
            if let Some(len) = found {
                return len;
            }
        }
        0
    }
}

/// spaCy's suffix search, `a$|b$|…`: the match that starts earliest. The plain alternatives
/// form one `regex` (leftmost start); each `(?<=X)Y$` becomes `(?:X)(Y)$` whose group 1
/// starts where the lookbehind version would (Python lookbehinds have a fixed width).
struct Suffixes {
    plain: Option<regex::Regex>,
    behind: Vec<regex::Regex>,
    fancy: Vec<Regex>,
}

impl Suffixes {
    fn new(pattern: &str) -> Result<Suffixes> {
        let mut plain = Vec::new();
        let mut behind = Vec::new();
        let mut fancy = Vec::new();
        for alt in split_alternatives(pattern) {
            if !has_lookaround(alt) {
                plain.push(alt);
            } else if let Some(rewritten) = lookbehind_as_group(alt) {
                behind.push(regex::Regex::new(&rewritten)?);
            } else {
                fancy.push(Regex::new(alt)?);
            }
        }
        let plain = if plain.is_empty() {
            None
        } else {
            Some(regex::Regex::new(&plain.join("|"))?)
        };
        Ok(Suffixes {
            plain,
            behind,
            fancy,
        })
    }

    fn find(&self, s: &str) -> usize {
        let mut start = s.len();
        if let Some(m) = self.plain.as_ref().and_then(|re| re.find(s)) {
            start = m.start();
        }
        for re in &self.behind {
            if let Some(g) = re.captures(s).and_then(|c| c.get(1)) {
                start = start.min(g.start());
            }
        }
        for re in &self.fancy {
            if let Ok(Some(m)) = re.find(s) {
                start = start.min(m.start());
            }
        }
        s.len() - start
    }
}

/// The literal character an anchored alternative starts with (`^x…` or `^\x…` for ASCII
/// punctuation), if any.
fn leading_literal(alt: &str) -> Option<char> {
    let rest = alt.strip_prefix('^')?;
    let mut chars = rest.chars();
    match chars.next()? {
        '\\' => chars.next().filter(|c| c.is_ascii_punctuation()),
        c if c.is_alphanumeric() || " -_'\"&%§=<>,;:!@#~`".contains(c) => Some(c),
        _ => None,
    }
    // `^x?` or `^x*` may match without the character.
    .filter(|_| !matches!(chars.next(), Some('?' | '*' | '{')))
}

fn has_lookaround(alt: &str) -> bool {
    alt.contains("(?=") || alt.contains("(?!") || alt.contains("(?<=") || alt.contains("(?<!")
}

/// `(?<=X)Y` (X without nested groups, Y without lookaround) → `(?:X)(Y)`.
fn lookbehind_as_group(alt: &str) -> Option<String> {
    let rest = alt.strip_prefix("(?<=")?;
    let close = group_end(rest)?;
    let (behind, tail) = (&rest[..close], &rest[close + 1..]);
    if has_lookaround(tail) || behind.contains('(') {
        return None;
    }
    Some(format!("(?:{behind})({tail})"))
}

/// Walks a pattern's characters outside escapes and character classes, with the group depth
/// before each; stops at the first character `stop` accepts and returns its byte index.
fn scan(pattern: &str, mut stop: impl FnMut(usize, char, usize) -> bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut chars = pattern.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            ']' if in_class => in_class = false,
            _ if in_class => {}
            '[' => in_class = true,
            _ => {
                if stop(i, c, depth) {
                    return Some(i);
                }
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }
    None
}

/// Byte index of the `)` closing a group whose body starts at `s[0]`.
fn group_end(s: &str) -> Option<usize> {
    scan(s, |_, c, depth| c == ')' && depth == 0)
}

/// The top-level alternatives of a pattern (`|` outside groups and classes).
fn split_alternatives(pattern: &str) -> Vec<&str> {
    let mut cuts = Vec::new();
    scan(pattern, |i, c, depth| {
        if c == '|' && depth == 0 {
            cuts.push(i);
        }
        false
    });
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        out.push(&pattern[start..cut]);
        start = cut + 1;
    }
    out.push(&pattern[start..]);
    out
}

fn push_pieces(start: usize, lens: &[usize], out: &mut Vec<Span>) {
    let mut at = start;
    for &len in lens {
        out.push((at, at + len));
        at += len;
    }
}

/// Unicode letter (category L*), with shortcuts for ASCII and Latin-1 to Latin Extended-B
/// (all letters there but × and ÷).
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else if ('\u{c0}'..='\u{24f}').contains(&c) {
        c != '\u{d7}' && c != '\u{f7}'
    } else {
        unicode_categories::UnicodeCategories::is_letter(c)
    }
}

/// Python's `str.isspace` for one character (Unicode White_Space plus the ASCII
/// information separators U+001C..U+001F, which Python also counts).
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// spaCy's `is_punct`: every character is Unicode punctuation (category P*).
fn is_punct(tok: &str) -> bool {
    !tok.is_empty()
        && tok
            .chars()
            .all(unicode_categories::UnicodeCategories::is_punctuation)
}

/// Python `re` syntax → fancy-regex syntax: `\uXXXX` and `\UXXXXXXXX` become `\x{…}`.
fn python_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let width = match bytes[i + 1] {
                b'u' => 4,
                b'U' => 8,
                _ => 0,
            };
            if width > 0 && i + 2 + width <= bytes.len() {
                out.push_str("\\x{");
                out.push_str(&pattern[i + 2..i + 2 + width]);
                out.push('}');
                i += 2 + width;
                continue;
            }
            // Copy the escape and the escaped character whole (it may be multi-byte).
            let next = pattern[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&pattern[i..i + 1 + next]);
            i += 1 + next;
            continue;
        }
        let len = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + len]);
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_punctuation_and_keeps_abbreviations() {
        let t = german();
        assert_eq!(
            t.words("Das ist z.B. ein Test, oder (nicht)?"),
            vec!["Das", "ist", "z.B.", "ein", "Test", ",", "oder", "(", "nicht", ")", "?"]
        );
        assert_eq!(t.words("  auf'm\n\nDach "), vec!["auf", "'m", "Dach"]);
        assert_eq!(t.words("10km weit"), vec!["10", "km", "weit"]);
        assert_eq!(
            t.words("siehe https://www.debian.org/doc."),
            vec!["siehe", "https://www.debian.org/doc", "."]
        );
    }

    #[test]
    fn counts_sentences_like_the_sentencizer() {
        let t = german();
        assert_eq!(t.count_sentences("Eins. Zwei! Drei?"), 3);
        assert_eq!(t.count_sentences("Ein Satz ohne Ende"), 1);
        assert_eq!(t.count_sentences("Was?! Nichts."), 2);
        assert_eq!(t.count_sentences(""), 0);
    }

    #[test]
    fn alternatives_split_outside_groups_and_classes() {
        assert_eq!(
            split_alternatives(r"a|(b|c)|[|]|\|"),
            vec!["a", "(b|c)", "[|]", r"\|"]
        );
        assert_eq!(group_end(r"[)]\)x)y"), Some(6));
    }

    #[test]
    fn python_escapes_become_rust_escapes() {
        assert_eq!(
            python_to_rust(r"[\u00A6\U0001D000]"),
            r"[\x{00A6}\x{0001D000}]"
        );
        assert_eq!(python_to_rust(r"\'ä\.$"), r"\'ä\.$");
    }
}
