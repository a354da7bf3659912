//! Language identification and OSCAR's own annotations.
//!
//! The language score comes from, in order: the record's OSCAR `identification` (when
//! `use_metadata`), a fastText model given as the stage input `language_model` (lid.176 as
//! datatrove's `LanguageFilter` uses it, or GlotLID as FineWeb-2 did), or `whatlang` (pure
//! Rust, no model file). A document passes when one of the wanted languages scores above the
//! threshold, as in datatrove.

use std::path::Path;

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::config;
use crate::doc::Doc;
use crate::fasttext_ids::Dictionary;
use crate::quality::Verdict;

pub struct LanguageId {
    cfg: config::Language,
    wanted: Vec<String>,
    model: Option<(fasttext::FastText, Dictionary)>,
}

impl LanguageId {
    pub fn new(cfg: &config::Language, model: Option<&Path>) -> Result<LanguageId> {
        let model = match model {
            None => None,
            Some(path) => {
                let mut ft = fasttext::FastText::new();
                let name = path.to_string_lossy();
                ft.load_model(&name)
                    .map_err(|e| anyhow!("loading the fastText model {name}: {e}"))?;
                Some((ft, Dictionary::load(path)?))
            }
        };
        Ok(LanguageId {
            wanted: cfg.languages.iter().map(|l| base_code(l)).collect(),
            cfg: cfg.clone(),
            model,
        })
    }

    /// Which identifier answers for documents without OSCAR metadata.
    pub fn backend(&self) -> &'static str {
        if self.model.is_some() {
            "fasttext"
        } else {
            "whatlang"
        }
    }

    pub fn check(&self, doc: &mut Doc) -> Verdict {
        let scores = match self.scores(doc) {
            Ok(scores) => scores,
            Err(e) => return Err(format!("language_model_error: {e}")),
        };
        if let Some((lang, score)) = scores
            .iter()
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        {
            doc.meta
                .insert("language".into(), Value::from(lang.clone()));
            doc.meta
                .insert("language_score".into(), Value::from(*score));
        }
        let keep = self.wanted.iter().any(|w| {
            scores
                .iter()
                .any(|(lang, score)| lang == w && *score > self.cfg.threshold)
        });
        if keep {
            Ok(())
        } else {
            Err("language".into())
        }
    }

    /// (language, score) pairs; languages as ISO 639-1 codes where one exists.
    pub fn scores(&self, doc: &Doc) -> Result<Vec<(String, f64)>, String> {
        if self.cfg.use_metadata {
            if let Some(id) = doc.meta.get("identification") {
                if let (Some(label), Some(prob)) = (
                    id.get("label").and_then(Value::as_str),
                    id.get("prob").and_then(Value::as_f64),
                ) {
                    return Ok(vec![(base_code(label), prob)]);
                }
            }
        }
        if let Some((model, dictionary)) = &self.model {
            // As datatrove: one line, newlines as spaces; fastText's Python API appends
            // the newline that makes the end-of-sentence token.
            let ids = dictionary.line_ids(&doc.text.replace('\n', " "));
            let preds = model.predict_on_words(&ids, -1, 0.0)?;
            return Ok(preds
                .into_iter()
                .map(|p| {
                    let label = p.label.trim_start_matches("__label__");
                    (base_code(label), p.prob as f64)
                })
                .collect());
        }
        Ok(match whatlang::detect(&doc.text) {
            Some(info) => vec![(base_code(info.lang().code()), info.confidence())],
            None => Vec::new(),
        })
    }
}

/// `deu_Latn`, `deu` and `de` all mean German: ISO 639-3 codes of common languages and
/// GlotLID's script suffixes map to ISO 639-1, the codes OSCAR and lid.176 use.
pub fn base_code(label: &str) -> String {
    let code = label.split('_').next().unwrap_or(label);
    let two = match code {
        "deu" => "de",
        "eng" => "en",
        "fra" => "fr",
        "nld" => "nl",
        "ita" => "it",
        "spa" => "es",
        "por" => "pt",
        "pol" => "pl",
        "ces" => "cs",
        "dan" => "da",
        "swe" => "sv",
        "nob" | "nor" => "no",
        "fin" => "fi",
        "hun" => "hu",
        "rus" => "ru",
        "tur" => "tr",
        "ltz" => "lb",
        "gsw" => "als",
        other => other,
    };
    two.to_string()
}

/// OSCAR 23.01 annotations: quality warnings, the adult-content perplexity, UT1 categories.
pub fn oscar(cfg: &config::Oscar, doc: &Doc) -> Verdict {
    let strings = |key: &str| -> Vec<&str> {
        doc.meta
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    if strings("quality_warnings")
        .iter()
        .any(|w| cfg.quality_warnings.iter().any(|q| q == w))
    {
        return Err("oscar_quality_warning".into());
    }
    if let (Some(min), Some(pp)) = (
        cfg.harmful_pp_min,
        doc.meta.get("harmful_pp").and_then(Value::as_f64),
    ) {
        if pp < min {
            return Err("oscar_harmful_pp".into());
        }
    }
    if strings("categories")
        .iter()
        .any(|c| cfg.categories.iter().any(|b| b == c))
    {
        return Err("oscar_category".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn doc_with(meta: Value, text: &str) -> Doc {
        let Value::Object(meta) = meta else {
            panic!("meta is an object")
        };
        Doc::new("x".into(), text.into(), meta, "f".into(), 1)
    }

    #[test]
    fn oscar_metadata_decides_when_present() {
        let id = LanguageId::new(&config::Language::default(), None).unwrap();
        let mut d = doc_with(
            json!({"identification": {"label": "en", "prob": 0.99}}),
            "Ein deutscher Satz.",
        );
        assert!(id.check(&mut d).is_err());
        let mut d = doc_with(
            json!({"identification": {"label": "de", "prob": 0.95}}),
            "x",
        );
        assert!(id.check(&mut d).is_ok());
        assert_eq!(d.meta["language"], "de");
    }

    #[test]
    fn whatlang_answers_without_metadata() {
        let id = LanguageId::new(
            &config::Language {
                threshold: 0.5,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let mut d = Doc::new(
            "x".into(),
            "Die Katze sitzt auf der Matte und schaut aus dem Fenster in den Garten hinaus.".into(),
            Map::new(),
            "f".into(),
            1,
        );
        assert!(id.check(&mut d).is_ok(), "{:?}", d.meta);
        assert_eq!(base_code("deu_Latn"), "de");
    }

    #[test]
    fn oscar_annotations_drop() {
        let cfg = config::Oscar {
            harmful_pp_min: Some(20.0),
            ..Default::default()
        };
        assert!(oscar(&cfg, &doc_with(json!({"quality_warnings": ["noisy"]}), "")).is_err());
        assert!(oscar(&cfg, &doc_with(json!({"quality_warnings": ["tiny"]}), "")).is_ok());
        assert!(oscar(&cfg, &doc_with(json!({"harmful_pp": 5.0}), "")).is_err());
        assert!(oscar(&cfg, &doc_with(json!({"categories": ["adult"]}), "")).is_err());
        assert!(oscar(&cfg, &doc_with(json!({"categories": null}), "")).is_ok());
    }
}
