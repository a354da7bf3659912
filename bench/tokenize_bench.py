"""`just bench tokenize`: tokenizing a German corpus, leo's tokenize plugin vs Python `tokenizers`.

Both encode the same texts (../shared/data/corpus-de: 26,048 documents, 8.7M Llama-2 tokens)
with the same tokenizer.json on the same number of threads. leo: the plugin's encode path
(plugins/tokenize/examples/tokenize_bench.rs: long documents in pieces, ids without building
`Encoding`s). Python: `Tokenizer.encode_batch(texts, add_special_tokens=False)` (and
`encode_batch_fast`), whole documents, as a Python pipeline would call it. Runs alternate; the
best of each side is compared, and the bench fails unless both produced the same ids.

Usage: tokenize_bench.py --leo TARGET/release/examples/tokenize_bench [--runs 3] [--threads N]
"""
import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from array import array

ap = argparse.ArgumentParser()
ap.add_argument("--leo", required=True, help="leo's tokenize_bench example binary")
ap.add_argument("--runs", type=int, default=3, help="timed runs per side")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--chunk-chars", type=int, default=None, help="leo's piece size (default: the plugin's)")
ap.add_argument("--no-word-split", action="store_true", help="leo: BPE on whole pieces (no word cut)")
args = ap.parse_args()

# Both sides use rayon; pin both pools to the same size before tokenizers starts its pool.
os.environ["RAYON_RS_NUM_CPUS"] = str(args.threads)
os.environ["RAYON_NUM_THREADS"] = str(args.threads)
from tokenizers import Tokenizer  # noqa: E402

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
tokenizer_json = os.path.join(root, "llama2-tokenizer", "tokenizer.json")
leo_cmd = [args.leo, "--tokenizer", tokenizer_json]
if args.chunk_chars is not None:
    leo_cmd += ["--chunk-chars", str(args.chunk_chars)]
if args.no_word_split:
    leo_cmd += ["--no-word-split"]

with tempfile.TemporaryDirectory() as tmp:
    docs_path = os.path.join(tmp, "docs.jsonl")
    subprocess.run([args.leo, "--export-jsonl", docs_path], check=True)
    with open(docs_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
tok = Tokenizer.from_file(tokenizer_json)


def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def python_run(fast):
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    t, c = time.perf_counter(), cpu()
    encs = encode(texts, add_special_tokens=False)
    return time.perf_counter() - t, cpu() - c, encs


def leo_run():
    out = subprocess.run(leo_cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


py, py_fast, leo = [], [], []
encs = None
for _ in range(args.runs):
    leo.append(leo_run())
    seconds, cpu_s, encs = python_run(fast=False)
    py.append((seconds, cpu_s))
    seconds, cpu_s, _ = python_run(fast=True)
    py_fast.append((seconds, cpu_s))

sha = hashlib.sha256()
tokens = 0
for e in encs:
    ids = e.ids
    tokens += len(ids)
    sha.update(array("I", ids).tobytes())  # little-endian u32, as leo hashes them
if sys.byteorder != "little":
    sys.exit("this bench hashes ids as little-endian")
ok = leo[0]["ids_sha256"] == sha.hexdigest() and leo[0]["tokens"] == tokens

# Wall time decides (best run of each side); CPU seconds (all threads) show the work done,
# which varies less when something else shares the machine.
best_leo = min(r["seconds"] for r in leo)
cpu_leo = min(r["cpu_seconds"] for r in leo)
best_py, cpu_py = min(s for s, _ in py), min(c for _, c in py)
best_fast, cpu_fast = min(s for s, _ in py_fast), min(c for _, c in py_fast)
rate = lambda s: tokens / s  # noqa: E731
words = f"words cut before {leo[0]['word_split']}" if leo[0]["word_split"] else "no word cut"
print(f"corpus: {len(texts)} documents, {tokens} tokens; {args.threads} threads; leo {leo[0]['chunking']}, {words}")
print(f"{'':28}{'best s':>9}{'tokens/s':>14}{'CPU s':>9}   runs (s)")
for name, best, cpu_s, runs in [
    ("python encode_batch", best_py, cpu_py, [s for s, _ in py]),
    ("python encode_batch_fast", best_fast, cpu_fast, [s for s, _ in py_fast]),
    ("leo tokenize", best_leo, cpu_leo, [r["seconds"] for r in leo]),
]:
    print(f"{name:28}{best:9.2f}{rate(best):14,.0f}{cpu_s:9.2f}   {', '.join(f'{s:.2f}' for s in runs)}")
best_run = min(r["run_seconds"] for r in leo)
print(f"{'leo tokenize stage, whole':28}{best_run:9.2f}{rate(best_run):14,.0f}{'':9}   (read, encode, split, shuffle, write shards)")
print(f"ratio leo / python encode_batch: {best_py / best_leo:.2f}x (CPU {cpu_py / cpu_leo:.2f}x); "
      f"/ encode_batch_fast: {best_fast / best_leo:.2f}x (CPU {cpu_fast / cpu_leo:.2f}x)")
print(f"same ids: {'yes' if ok else 'NO'}")
if not ok:
    sys.exit(f"leo and Python produced different ids: {leo[0]} vs {tokens} tokens, sha {sha.hexdigest()}")
