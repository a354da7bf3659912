#!/usr/bin/env python3
"""Builds the data of workflows/leolm-tiny.toml from ../shared/data/demo (run once; the output
is committed under workflows/data/leolm-tiny, see SOURCES.md there).

- The German and English Bibles are one book per line. A few books (the same in both) are held
  out of every training set: they are the held-out perplexity texts and the source of the
  multiple-choice cloze tasks, so German and English are measured on the same content.
- Cloze items: a sentence of a held-out book cut at a word boundary near its middle; the true
  ending and three endings of other sentences of similar length from the same book. Seeded, so
  the files are reproducible: `python3 tools/make-demo-data.py SRC DST`.
"""
import json
import random
import re
import shutil
import sys
from pathlib import Path

# Held out: (German first words, English first words) of each book's line.
HELD_OUT = [
    ("Und es geschah in den Tagen, als die Richter", "The Book of Ruth"),
    ("Wie sitzt einsam die volkreiche Stadt", "The Lamentations of Jeremiah"),
    ("Und das Wort Jehovas geschah zu Jona", "The Book of Jonah"),
    ("Paulus und Timotheus, Knechte Jesu Christi, allen Heiligen", "Paul’s Letter to the Philippians"),
    ("Jakobus, Knecht Gottes", "The Letter from James"),
    ("Was von Anfang war", "John’s First Letter"),
]
ITEMS_PER_LANGUAGE = 120
SEED = 2023


def books(path):
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def split(lines, prefixes):
    held, train = [], []
    for line in lines:
        (held if any(line.startswith(p) for p in prefixes) else train).append(line)
    assert len(held) == len(prefixes), (len(held), prefixes)
    return train, held


def sentences(text):
    parts = re.split(r"(?<=[.!?])\s+", text)
    return [p for p in parts if 50 <= len(p) <= 160 and p.count(" ") >= 8]


def cloze_items(held, lang, rng):
    pools = []
    for book in held:
        cut = []
        for s in sentences(book):
            words = s.split(" ")
            k = len(words) // 2
            cut.append((" ".join(words[:k]), " ".join(words[k:])))
        pools.append(cut)
    items = []
    per_book = ITEMS_PER_LANGUAGE // len(pools)
    for b, pool in enumerate(pools):
        for ctx, ending in rng.sample(pool, min(per_book, len(pool))):
            others = [e for c, e in pool if e != ending and abs(len(e) - len(ending)) < 30]
            distractors = rng.sample(others, 3)
            endings = distractors + [ending]
            rng.shuffle(endings)
            items.append({
                "id": f"{lang}-{b}-{len(items)}",
                "ctx": ctx,
                "endings": endings,
                "label": endings.index(ending),
            })
    return items


def main(src, dst):
    src, dst = Path(src), Path(dst)
    for d in ["de", "en", "heldout", "cloze", "sft"]:
        (dst / d).mkdir(parents=True, exist_ok=True)
    de_train, de_held = split(books(src / "de/elberfelder-1905.txt"), [h[0] for h in HELD_OUT])
    en_train, en_held = split(books(src / "en/world-english-bible.txt"), [h[1] for h in HELD_OUT])
    (dst / "de/elberfelder-1905.txt").write_text("\n".join(de_train) + "\n", encoding="utf-8")
    (dst / "en/world-english-bible.txt").write_text("\n".join(en_train) + "\n", encoding="utf-8")
    shutil.copy(src / "de/germandpr-passages.txt", dst / "de/germandpr-passages.txt")
    shutil.copy(src / "sft/germandpr-instruct.jsonl", dst / "sft/germandpr-instruct.jsonl")
    (dst / "heldout/de.txt").write_text("\n".join(de_held) + "\n", encoding="utf-8")
    (dst / "heldout/en.txt").write_text("\n".join(en_held) + "\n", encoding="utf-8")
    for lang, held in [("de", de_held), ("en", en_held)]:
        rng = random.Random(SEED)
        items = cloze_items(held, lang, rng)
        with open(dst / f"cloze/bible_cloze_{lang}.jsonl", "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        print(f"{lang}: {len(items)} cloze items, held out {sum(map(len, held))} chars")


if __name__ == "__main__":
    main(*sys.argv[1:3])
