"""`just bench corpus`: leo's corpus stage vs datatrove on the same input, same filters, same
MinHash settings, same core count, in one run.

Inputs: the shared German corpus (../shared/data/corpus-de, 26k documents, 28 MB) and, unless
`--skip-large`, that corpus replicated to about 300 MB with perturbations (every copy of a
document gets a new id and about 3% of its words dropped or swapped, so MinHash sees near
duplicates rather than exact ones). Each input is split into as many files as there are cores so
both tools can use every core (datatrove parallelises by file).

The pipeline on both sides, FineWeb-2's German settings: fastText language id (lid.176.ftz,
de > 0.821) → Gopher repetition → FineWeb quality → Gopher quality → MinHash (5-grams,
14 buckets × 8, German words) keeping one document per cluster. Prints documents/s, MB/s, peak
RSS and the ratio; checks that both keep the same number of documents.

    python bench/corpus.py --leo target/release/examples/corpus_run --python $LEO_DATATROVE_PYTHON \
        --model $LEO_LID176_MODEL [--skip-large] [--copies 10]
"""
import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "data", "corpus-de", "debian-docs-de.jsonl.zst")
CORES = os.cpu_count()

DATATROVE = r"""
import json, os, sys, time, resource
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.filters import LanguageFilter, GopherRepetitionFilter, FineWebQualityFilter, GopherQualityFilter
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
import fasttext

data, work, model, cores = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
STOP = ["der", "und", "die", "in", "von", "im", "den", "des", "mit", "das", "er", "dem", "als", "wurde", "für"]

class Lang(LanguageFilter):
    # Offline: the model file instead of a download, loaded in each worker.
    def __init__(self, path):
        super().__init__(languages=["de"], language_threshold=0.821)
        self.path = path

    def filter(self, doc):
        if self.model._model is None:
            import fasttext
            self.model._model = fasttext.load_model(self.path)
        return super().filter(doc)

cfg = MinhashConfig()
f = lambda d: os.path.join(work, d)
started = time.time()
stages = [
    ([JsonlReader(data, compression="zstd"), Lang(model),
      GopherRepetitionFilter(dup_line_frac=0.263, top_n_grams=((2, 0.169), (3, 0.153), (4, 0.137)),
          dup_n_grams=((5, 0.141), (6, 0.1324), (7, 0.1238), (8, 0.1152), (9, 0.1066), (10, 0.098)), language="de"),
      FineWebQualityFilter(line_punct_thr=0.0, new_line_ratio=0.152, language="de"),
      GopherQualityFilter(min_avg_word_length=None, max_avg_word_length=15, max_non_alpha_words_ratio=0.774,
          stop_words=STOP, language="de"),
      JsonlWriter(f("filtered"), compression=None)], cores),
    ([JsonlReader(f("filtered"), compression=None), MinhashDedupSignature(f("sigs"), config=cfg, language="de")], cores),
    ([MinhashDedupBuckets(f("sigs"), f("buckets"), config=cfg)], cfg.num_buckets),
    ([MinhashDedupCluster(f("buckets"), f("remove"), config=cfg)], 1),
    ([JsonlReader(f("filtered"), compression=None), MinhashDedupFilter(f("remove")), JsonlWriter(f("out"), compression=None)], cores),
]
for i, (pipeline, tasks) in enumerate(stages):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=cores, logging_dir=f(f"logs{i}")).run()
seconds = time.time() - started
kept = sum(sum(1 for _ in open(os.path.join(f("out"), n))) for n in os.listdir(f("out")))
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": seconds, "kept": kept, "peak_rss_kib": rss}))
"""


def read_docs(path):
    with open(path, "rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        return [json.loads(line) for line in text if line.strip()]


def perturb(text, rng):
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < 0.015:
            continue
        if r < 0.03 and out:
            out[-1], w = w, out[-1]
        out.append(w)
    return " ".join(out)


def write_split(docs, folder, parts):
    os.makedirs(folder, exist_ok=True)
    writers = []
    for i in range(parts):
        fh = open(os.path.join(folder, f"part-{i:02d}.jsonl.zst"), "wb")
        writers.append((fh, zstandard.ZstdCompressor(level=3).stream_writer(fh)))
    size = 0
    for i, d in enumerate(docs):
        line = (json.dumps(d, ensure_ascii=False) + "\n").encode()
        size += len(d["text"].encode())
        writers[i % parts][1].write(line)
    for fh, w in writers:
        w.close()
        fh.close()
    return size


def make_inputs(tmp, copies, skip_large):
    docs = read_docs(CORPUS)
    inputs = [("shared corpus", os.path.join(tmp, "small"), len(docs), write_split(docs, os.path.join(tmp, "small"), CORES))]
    if not skip_large:
        rng = random.Random(0)
        big = []
        for c in range(copies):
            for d in docs:
                text = d["text"] if c == 0 else perturb(d["text"], rng)
                big.append({"id": f"{d['id']}#{c}", "text": text})
        rng.shuffle(big)
        inputs.append((f"replicated x{copies}", os.path.join(tmp, "large"), len(big), write_split(big, os.path.join(tmp, "large"), CORES)))
    return inputs


def run_leo(leo, data, work, model):
    params = {
        "normalize": {"nfc": False, "whitespace": False},
        "filters": {"language": {"use_metadata": False}, "oscar": {"enabled": False}},
        "dedup": {"exact": {"enabled": False}},
    }
    cfg = os.path.join(work, "params.json")
    os.makedirs(work, exist_ok=True)
    with open(cfg, "w") as f:
        json.dump(params, f)
    started = time.time()
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", leo, cfg, os.path.join(work, "out"), data, "--language-model", model],
        capture_output=True, text=True, check=True,
    )
    seconds = time.time() - started
    stats = json.loads(out.stdout)
    rss = int(out.stderr.strip().splitlines()[-1])
    return {"seconds": seconds, "kept": stats["output"]["documents"], "peak_rss_kib": rss}


def run_datatrove(python, data, work, model):
    os.makedirs(work, exist_ok=True)
    out = subprocess.run(
        [python, "-c", DATATROVE, data, work, model, str(CORES)], capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit("datatrove failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--leo", required=True)
    p.add_argument("--python", required=True, help="python of the datatrove venv")
    p.add_argument("--model", required=True, help="lid.176.ftz")
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--skip-large", action="store_true")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="leo-bench-corpus-")
    try:
        print(f"{CORES} cores; preparing inputs in {tmp}", flush=True)
        for name, data, n_docs, size in make_inputs(tmp, args.copies, args.skip_large):
            mb = size / 1e6
            print(f"\n{name}: {n_docs} documents, {mb:.0f} MB of text", flush=True)
            leo = run_leo(args.leo, data, os.path.join(tmp, "leo-" + os.path.basename(data)), args.model)
            print(f"  leo       {leo['seconds']:8.1f} s  {n_docs / leo['seconds']:8.0f} docs/s  {mb / leo['seconds']:6.2f} MB/s"
                  f"  peak RSS {leo['peak_rss_kib'] / 1024:6.0f} MiB  kept {leo['kept']}", flush=True)
            dt = run_datatrove(args.python, data, os.path.join(tmp, "dt-" + os.path.basename(data)), args.model)
            print(f"  datatrove {dt['seconds']:8.1f} s  {n_docs / dt['seconds']:8.0f} docs/s  {mb / dt['seconds']:6.2f} MB/s"
                  f"  peak RSS {dt['peak_rss_kib'] / 1024:6.0f} MiB (largest process)  kept {dt['kept']}", flush=True)
            print(f"  leo is {dt['seconds'] / leo['seconds']:.1f}x datatrove; same documents kept: {leo['kept'] == dt['kept']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
