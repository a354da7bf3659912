//! Text normalisation before any filter sees a document.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::config::Normalize;

pub fn normalize(cfg: &Normalize, text: String) -> String {
    let text = if cfg.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
        text.nfc().collect()
    } else {
        text
    };
    if cfg.whitespace {
        whitespace(&text)
    } else {
        text
    }
}

/// `\r\n` and `\r` → `\n`; spaces and tabs at line ends removed; at most one empty line in
/// a row; no empty lines at the start or end (indentation is kept).
fn whitespace(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split('\n') {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line.trim_start_matches('\u{feff}'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_and_tidies() {
        let cfg = Normalize::default();
        let decomposed = "Mu\u{308}nchen  \r\n\r\n\r\n\n  Zweite Zeile\t\n";
        assert_eq!(
            normalize(&cfg, decomposed.into()),
            "München\n\n  Zweite Zeile"
        );
        let off = Normalize {
            nfc: false,
            whitespace: false,
        };
        assert_eq!(normalize(&off, decomposed.into()), decomposed);
    }
}
