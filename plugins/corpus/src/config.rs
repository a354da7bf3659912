//! The stage's params. Every filter is a table under `filters`, every dedup method one
//! under `dedup`; what a workflow leaves out takes the default: FineWeb-2's German
//! (`deu_Latn`) settings where FineWeb-2 has one (huggingface/fineweb-2
//! `configs/deu_Latn.yml`, summarised in LEOLM.md), datatrove's defaults otherwise.

use leo_plugin::ParamError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto` (by file name and record fields), `oscar`, `hf`, `jsonl`, `text` or `parquet`.
    pub format: Format,
    /// The text column of `jsonl` and `parquet` inputs.
    pub text_field: String,
    /// The id column; records without one get `FILE:LINE`.
    pub id_field: String,
    /// How plain text files become documents: one per `file`, `line` or `paragraph`.
    pub text_unit: TextUnit,
    /// `count` (report malformed records with file and line, go on) or `fail`.
    pub on_malformed: OnMalformed,
    /// Documents per output shard.
    pub shard_docs: usize,
    /// A checkpoint after about this many input documents (0: none); a killed stage
    /// continues from its latest.
    pub checkpoint_docs: u64,
    pub normalize: Normalize,
    pub filters: Filters,
    pub dedup: Dedup,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Auto,
            text_field: "text".into(),
            id_field: "id".into(),
            text_unit: TextUnit::File,
            on_malformed: OnMalformed::Count,
            shard_docs: 100_000,
            checkpoint_docs: 1_000_000,
            normalize: Normalize::default(),
            filters: Filters::default(),
            dedup: Dedup::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Auto,
    Oscar,
    Hf,
    Jsonl,
    Text,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextUnit {
    File,
    Line,
    Paragraph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMalformed {
    Count,
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Normalize {
    /// Unicode NFC (web text mixes composed and decomposed umlauts).
    pub nfc: bool,
    /// `\r\n` → `\n`, trailing spaces and tabs of lines removed, runs of 3+ newlines → 2,
    /// leading and trailing whitespace removed.
    pub whitespace: bool,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            nfc: true,
            whitespace: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    pub language: Language,
    pub oscar: Oscar,
    pub gopher_repetition: GopherRepetition,
    pub gopher_quality: GopherQuality,
    pub c4: C4,
    pub fineweb_quality: FinewebQuality,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Language {
    pub enabled: bool,
    /// Keep documents whose score for one of these languages exceeds `threshold`.
    pub languages: Vec<String>,
    pub threshold: f64,
    /// Use OSCAR's `metadata.identification` when a record has it.
    pub use_metadata: bool,
}

impl Default for Language {
    fn default() -> Self {
        Language {
            enabled: true,
            languages: vec!["de".into()],
            // FineWeb-2 deu_Latn (GlotLID score).
            threshold: 0.821,
            use_metadata: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Oscar {
    pub enabled: bool,
    /// Drop documents carrying any of these OSCAR 23.01 `quality_warnings`.
    pub quality_warnings: Vec<String>,
    /// Drop documents whose `harmful_pp` (KenLM perplexity under an adult-content model;
    /// low = likely harmful) is below this. Records without the field pass.
    pub harmful_pp_min: Option<f64>,
    /// Drop documents in any of these UT1 blocklist `categories`.
    pub categories: Vec<String>,
}

impl Default for Oscar {
    fn default() -> Self {
        Oscar {
            enabled: true,
            quality_warnings: vec!["noisy".into()],
            harmful_pp_min: None,
            categories: [
                "adult",
                "agressif",
                "cryptojacking",
                "dating",
                "ddos",
                "gambling",
                "hacking",
                "malware",
                "mixed_adult",
                "phishing",
                "sexual_education",
                "warez",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// datatrove `GopherRepetitionFilter` (Gopher, Rae et al. 2021, table A1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetition {
    pub enabled: bool,
    pub dup_line_frac: Option<f64>,
    pub dup_para_frac: Option<f64>,
    pub dup_line_char_frac: Option<f64>,
    pub dup_para_char_frac: Option<f64>,
    /// `[n, max fraction]`: characters in the most frequent n-gram.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, max fraction]`: characters in repeated n-grams.
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        GopherRepetition {
            enabled: true,
            dup_line_frac: Some(0.263),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.169), (3, 0.153), (4, 0.137)],
            // FineWeb-2 publishes 5: 0.141 … 10: 0.098; the steps between are interpolated.
            dup_n_grams: vec![
                (5, 0.141),
                (6, 0.1324),
                (7, 0.1238),
                (8, 0.1152),
                (9, 0.1066),
                (10, 0.098),
            ],
        }
    }
}

/// datatrove `GopherQualityFilter`. `None` or 0 disables a rule, as in datatrove.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQuality {
    pub enabled: bool,
    pub min_doc_words: Option<usize>,
    pub max_doc_words: Option<usize>,
    pub min_avg_word_length: Option<f64>,
    pub max_avg_word_length: Option<f64>,
    pub max_symbol_word_ratio: Option<f64>,
    pub max_bullet_lines_ratio: Option<f64>,
    pub max_ellipsis_lines_ratio: Option<f64>,
    pub max_non_alpha_words_ratio: Option<f64>,
    pub min_stop_words: Option<usize>,
    pub stop_words: Vec<String>,
}

impl Default for GopherQuality {
    fn default() -> Self {
        GopherQuality {
            enabled: true,
            min_doc_words: Some(50),
            max_doc_words: Some(100_000),
            // German compounds are long: FineWeb-2 accepts averages of 0–15 characters.
            min_avg_word_length: None,
            max_avg_word_length: Some(15.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.774),
            min_stop_words: Some(2),
            stop_words: GERMAN_STOP_WORDS.map(String::from).to_vec(),
        }
    }
}

/// FineWeb-2's German stop words.
pub const GERMAN_STOP_WORDS: [&str; 15] = [
    "der", "und", "die", "in", "von", "im", "den", "des", "mit", "das", "er", "dem", "als",
    "wurde", "für",
];

/// datatrove `C4QualityFilter` (Raffel et al. 2020): line filters that also rewrite the
/// text. Off by default (FineWeb-2 does not use it); the policy phrases include German ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4 {
    pub enabled: bool,
    pub split_paragraph: bool,
    pub remove_citations: bool,
    pub filter_no_terminal_punct: bool,
    /// -1 disables.
    pub min_num_sentences: i64,
    pub min_words_per_line: i64,
    pub max_word_length: i64,
    pub filter_lorem_ipsum: bool,
    pub filter_javascript: bool,
    pub filter_curly_bracket: bool,
    pub filter_policy: bool,
    pub policy_substrings: Vec<String>,
}

impl Default for C4 {
    fn default() -> Self {
        C4 {
            enabled: false,
            split_paragraph: true,
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
            policy_substrings: [
                "terms of use",
                "privacy policy",
                "cookie policy",
                "uses cookies",
                "use of cookies",
                "use cookies",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// datatrove `FineWebQualityFilter` (Penedo et al. 2024).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinewebQuality {
    pub enabled: bool,
    pub line_punct_thr: f64,
    pub line_punct_exclude_zero: bool,
    pub short_line_thr: f64,
    pub short_line_length: usize,
    pub char_duplicates_ratio: f64,
    pub new_line_ratio: f64,
}

impl Default for FinewebQuality {
    fn default() -> Self {
        FinewebQuality {
            enabled: true,
            line_punct_thr: 0.0,
            line_punct_exclude_zero: false,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.152,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dedup {
    pub exact: Exact,
    pub minhash: Minhash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exact {
    /// Drop documents whose normalised text equals an earlier document's.
    pub enabled: bool,
}

impl Default for Exact {
    fn default() -> Self {
        Exact { enabled: true }
    }
}

/// MinHash LSH as datatrove's `MinhashConfig`: word n-grams of the simplified text, one
/// 64-bit xxhash per n-gram, `buckets × hashes_per_bucket` permutations from `seed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Minhash {
    pub enabled: bool,
    pub n_grams: usize,
    pub buckets: usize,
    pub hashes_per_bucket: usize,
    pub seed: u32,
}

impl Default for Minhash {
    fn default() -> Self {
        Minhash {
            enabled: true,
            n_grams: 5,
            buckets: 14,
            hashes_per_bucket: 8,
            seed: 1,
        }
    }
}

impl Config {
    /// Parses and checks the params; errors name the field (`filters.gopher_quality.x`).
    pub fn from_params(params: &Value) -> Result<Config, ParamError> {
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            params.clone()
        };
        let config: Config = serde_path_to_error::deserialize(params).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            ParamError::new(field, e.into_inner().to_string())
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ParamError> {
        if self.shard_docs == 0 {
            return Err(ParamError::new("shard_docs", "must be at least 1"));
        }
        let m = &self.dedup.minhash;
        if m.enabled
            && !((1..=64).contains(&m.n_grams)
                && (1..=256).contains(&m.buckets)
                && (1..=64).contains(&m.hashes_per_bucket))
        {
            return Err(ParamError::new(
                "dedup.minhash",
                "n_grams and hashes_per_bucket must be 1 to 64, buckets 1 to 256",
            ));
        }
        let l = &self.filters.language;
        if l.enabled && l.languages.is_empty() {
            return Err(ParamError::new(
                "filters.language.languages",
                "name at least one language (e.g. [\"de\"]) or set enabled = false",
            ));
        }
        if !(0.0..=1.0).contains(&l.threshold) {
            return Err(ParamError::new(
                "filters.language.threshold",
                "must be between 0 and 1",
            ));
        }
        for (name, list) in [
            (
                "filters.gopher_repetition.top_n_grams",
                &self.filters.gopher_repetition.top_n_grams,
            ),
            (
                "filters.gopher_repetition.dup_n_grams",
                &self.filters.gopher_repetition.dup_n_grams,
            ),
        ] {
            if list.iter().any(|&(n, _)| n == 0) {
                return Err(ParamError::new(name, "n-gram sizes must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_fineweb2_german() {
        let c = Config::from_params(&json!({})).unwrap();
        assert_eq!(c.filters.gopher_quality.max_avg_word_length, Some(15.0));
        assert_eq!(c.filters.gopher_repetition.dup_line_frac, Some(0.263));
        assert_eq!(c.dedup.minhash.buckets, 14);
        assert!(!c.filters.c4.enabled);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::from_params(&json!({"filters": {"gopher_quality": {"min_doc_word": 3}}}))
            .unwrap_err();
        assert_eq!(e.field, "filters.gopher_quality.min_doc_word");
        assert!(e.message.contains("min_doc_word"), "{}", e.message);
        let e = Config::from_params(&json!({"dedup": {"minhash": {"buckets": "x"}}})).unwrap_err();
        assert_eq!(e.field, "dedup.minhash.buckets");
        let e = Config::from_params(&json!({"format": "csv"})).unwrap_err();
        assert_eq!(e.field, "format");
        let e =
            Config::from_params(&json!({"filters": {"language": {"languages": []}}})).unwrap_err();
        assert_eq!(e.field, "filters.language.languages");
    }
}
