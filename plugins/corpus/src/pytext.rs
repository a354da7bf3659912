//! Python string semantics the filters depend on. datatrove's thresholds are ratios of
//! Python `len()` (code points), lines from `str.splitlines()`, and `str.strip()` /
//! `str.isalpha()`; leo computes the same quantities so the same documents pass.

use crate::words::py_isspace;

/// `len(s)`: code points.
pub fn len(s: &str) -> usize {
    // Counting UTF-8 lead bytes is what `chars().count()` does, without decoding.
    s.bytes().filter(|&b| (b & 0xC0) != 0x80).count()
}

/// `s.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

pub fn lstrip(s: &str) -> &str {
    s.trim_start_matches(py_isspace)
}

pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

/// `c.isalpha()`: Unicode letters (categories Lu, Ll, Lt, Lm, Lo).
pub fn isalpha(c: char) -> bool {
    crate::words::is_letter(c)
}

/// `s.splitlines()`: splits at \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029; no
/// empty last line for a trailing separator.
pub fn splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        out.push(&s[start..i]);
        let mut next = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = iter.peek() {
                iter.next();
                next = j + 1;
            }
        }
        start = next;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// `s.split()` without arguments: runs of whitespace separate, no empty parts.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|w| !w.is_empty())
}

/// `s.count(sub)`: non-overlapping occurrences.
pub fn count(s: &str, sub: &str) -> usize {
    s.matches(sub).count()
}

/// `re.split(r"<sep>{2,}", s)` / `re.split(r"<sep>+", s)` for a single-character separator.
pub fn split_runs(s: &str, sep: char, min_run: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = s.as_bytes();
    let sep_byte = sep as u8;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == sep_byte {
            let mut j = i;
            while j < bytes.len() && bytes[j] == sep_byte {
                j += 1;
            }
            if j - i >= min_run {
                out.push(&s[start..i]);
                start = j;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// datatrove's `find_duplicates`: (number of elements seen before, their total length).
pub fn find_duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let mut seen = ahash::AHashSet::new();
    let (mut elements, mut chars) = (0, 0);
    for item in items {
        if !seen.insert(item) {
            elements += 1;
            chars += len(item);
        }
    }
    (elements, chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_like_python() {
        assert_eq!(
            splitlines("a\nb\r\nc\rd\u{2028}e\n"),
            vec!["a", "b", "c", "d", "e"]
        );
        assert_eq!(splitlines("a\n\nb"), vec!["a", "", "b"]);
        assert!(splitlines("").is_empty());
    }

    #[test]
    fn split_runs_like_re_split() {
        assert_eq!(
            split_runs("a\n\nb\nc\n\n\nd", '\n', 2),
            vec!["a", "b\nc", "d"]
        );
        assert_eq!(split_runs("a\n\nb\n", '\n', 1), vec!["a", "b", ""]);
    }

    #[test]
    fn lengths_are_code_points() {
        assert_eq!(len("Straße"), 6);
        assert_eq!(find_duplicates(["ä", "b", "ä", "ä"]), (2, 2));
    }
}
