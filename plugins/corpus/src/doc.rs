//! A document on its way through the stage.

use std::cell::OnceCell;

use serde_json::{Map, Value};

use crate::words::{self, Span};

#[derive(Debug)]
pub struct Doc {
    /// The record's id, or `FILE:LINE` when it has none.
    pub id: String,
    pub text: String,
    /// Source metadata (OSCAR's `metadata` with its `warc_headers`, an HF record's `meta`,
    /// other fields of a plain record); filters add what they measured (`language`…).
    pub meta: Map<String, Value>,
    /// Input file (relative to its input) and 1-based line or row.
    pub file: String,
    pub line: u64,
    words: OnceCell<Vec<Span>>,
}

impl Doc {
    pub fn new(id: String, text: String, meta: Map<String, Value>, file: String, line: u64) -> Doc {
        Doc {
            id,
            text,
            meta,
            file,
            line,
            words: OnceCell::new(),
        }
    }

    /// The German words of the text (spaCy's split, as datatrove uses it), computed once.
    pub fn words(&self) -> Vec<&str> {
        let text = &self.text;
        let spans = self.words.get_or_init(|| {
            let mut spans = Vec::with_capacity(text.len() / 6);
            words::german().tokenize(text, &mut spans);
            spans.retain(|&(a, b)| !text[a..b].chars().all(words::py_isspace));
            spans
        });
        spans.iter().map(|&(a, b)| &text[a..b]).collect()
    }

    /// Replaces the text (a filter that rewrites lines); cached words are dropped.
    pub fn set_text(&mut self, text: String) {
        self.text = text;
        self.words = OnceCell::new();
    }
}
