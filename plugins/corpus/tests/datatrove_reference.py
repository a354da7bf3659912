"""datatrove's decisions on a corpus, for leo's conformance test (plugins/corpus/tests/datatrove.rs).

    python datatrove_reference.py CORPUS.jsonl.zst LID_MODEL OUT_DIR

Writes OUT_DIR/kept.json ({family: [kept ids]}) for each filter family, configured with
FineWeb-2's German settings (leo's defaults), and OUT_DIR/clusters.json (MinHash clusters
of >1 document, as lists of ids) from datatrove's four MinHash stages with their defaults
(5-grams, 14 buckets x 8 hashes, seed 1, xxhash64) and German word splitting.
"""
import io
import json
import os
import struct
import sys
import time
from multiprocessing import Pool

import zstandard

from datatrove.data import Document

STOP_WORDS = ["der", "und", "die", "in", "von", "im", "den", "des", "mit", "das", "er", "dem", "als", "wurde", "für"]


def load(path):
    with open(path, "rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        return [json.loads(line) for line in text if line.strip()]


def families(lid_model):
    import fasttext
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )

    language = LanguageFilter(languages=["de"], language_threshold=0.821)
    # Offline: hand the filter the model file instead of letting it download lid.176.bin.
    language.model._model = fasttext.load_model(lid_model)
    return {
        "language": language,
        "gopher_repetition": GopherRepetitionFilter(
            dup_line_frac=0.263,
            dup_para_frac=0.3,
            dup_line_char_frac=0.2,
            dup_para_char_frac=0.2,
            top_n_grams=((2, 0.169), (3, 0.153), (4, 0.137)),
            dup_n_grams=((5, 0.141), (6, 0.1324), (7, 0.1238), (8, 0.1152), (9, 0.1066), (10, 0.098)),
            language="de",
        ),
        "gopher_quality": GopherQualityFilter(
            min_avg_word_length=None,
            max_avg_word_length=15,
            max_non_alpha_words_ratio=0.774,
            stop_words=STOP_WORDS,
            language="de",
        ),
        "fineweb_quality": FineWebQualityFilter(
            line_punct_thr=0.0, new_line_ratio=0.152, char_duplicates_ratio=0.01, short_line_thr=0.67, language="de"
        ),
        "c4": C4QualityFilter(language="de"),
    }


_FILTERS = None


def _init(lid_model):
    global _FILTERS
    _FILTERS = families(lid_model)


def _decide(record):
    out = {}
    for name, f in _FILTERS.items():
        doc = Document(text=record["text"], id=str(record["id"]), metadata={})
        result = f.filter(doc)
        out[name] = (result[0] if isinstance(result, tuple) else result) is True
    return record["id"], out


def filter_decisions(records, lid_model):
    kept = {name: [] for name in ["language", "gopher_repetition", "gopher_quality", "fineweb_quality", "c4"]}
    with Pool(os.cpu_count(), initializer=_init, initargs=(lid_model,)) as pool:
        for doc_id, decisions in pool.imap(_decide, records, chunksize=64):
            for name, keep in decisions.items():
                if keep:
                    kept[name].append(doc_id)
    return kept


def minhash_clusters(records, work):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.pipeline.readers import JsonlReader

    # One input file per core: datatrove parallelises the signatures by file.
    cores = os.cpu_count()
    share = (len(records) + cores - 1) // cores
    parts = [records[i * share : (i + 1) * share] for i in range(cores)]
    inputs = os.path.join(work, "input")
    os.makedirs(inputs, exist_ok=True)
    for i, part in enumerate(parts):
        with open(os.path.join(inputs, f"part-{i:03d}.jsonl"), "w") as f:
            for r in part:
                f.write(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n")
    config = MinhashConfig()
    sigs, buckets, clusters = (os.path.join(work, d) for d in ("sigs", "buckets", "clusters"))
    reader = JsonlReader(inputs, compression=None)
    steps = [
        [reader, MinhashDedupSignature(output_folder=sigs, config=config, language="de")],
        [MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config)],
        [MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config, save_cluster_id=True)],
    ]
    tasks = [len(parts), config.num_buckets, 1]
    for i, (pipeline, n) in enumerate(zip(steps, tasks)):
        LocalPipelineExecutor(
            pipeline=pipeline, tasks=n, workers=cores, logging_dir=os.path.join(work, f"logs{i}")
        ).run()
    # `NNNNNN.clusters` holds (document index within that task's file, cluster id) pairs.
    members = {}
    for rank, part in enumerate(parts):
        path = os.path.join(clusters, f"{rank:06d}.clusters")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        for doc_index, cluster in struct.iter_unpack("<2I", data):
            members.setdefault(cluster, []).append(part[doc_index]["id"])
    return [ids for ids in members.values() if len(ids) > 1]


def main():
    corpus, lid_model, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    records = load(corpus)
    started = time.time()
    with open(os.path.join(out, "clusters.json"), "w") as f:
        json.dump(minhash_clusters(records, os.path.join(out, "work")), f)
    print(f"datatrove minhash: {time.time() - started:.1f} s", file=sys.stderr)
    started = time.time()
    with open(os.path.join(out, "kept.json"), "w") as f:
        json.dump(filter_decisions(records, lid_model), f)
    print(f"datatrove filters: {time.time() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
