"""Exports spaCy's German tokenizer rules (prefix, suffix and infix patterns, URL pattern,
special cases, sentencizer punctuation) to JSON, for leo's Rust port of that tokenizer
(plugins/corpus/src/words.rs). datatrove splits German words with `spacy.blank("de")`, so
matching its filter decisions means matching these rules. spaCy is MIT-licensed.

    python tools/spacy-de-export.py > plugins/corpus/data/spacy-de.json
"""
import json
import sys

import spacy
from spacy.pipeline.sentencizer import Sentencizer

nlp = spacy.blank("de")
tok = nlp.tokenizer
out = {
    "spacy_version": spacy.__version__,
    "prefix": tok.prefix_search.__self__.pattern,
    "suffix": tok.suffix_search.__self__.pattern,
    "infix": tok.infix_finditer.__self__.pattern,
    "url": tok.url_match.__self__.pattern,
    "special_cases": {k: [t[65] for t in v] for k, v in sorted(tok.rules.items())},
    "sentence_punct": sorted(Sentencizer.default_punct_chars),
}
json.dump(out, sys.stdout, ensure_ascii=False, indent=0, sort_keys=True)
sys.stdout.write("\n")
