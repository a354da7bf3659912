"""Compares leo's eval outputs with lm-eval's, item by item.

    python compare_results.py LEO_DIR LM_EVAL_DIR [--tolerance 1e-6] [--ll-tolerance 1e-6]

Both folders hold `results.json` and `samples_TASK.jsonl`. For every (sub)task and document:
the prompt and continuations must be the same strings, the predictions (argmax, and per
character for acc_norm) equal, every per-document metric within the tolerance and every
log-likelihood within --ll-tolerance. Every aggregate metric and stderr in `results` must agree
within the tolerance (relative above 1), and leo's results must load in lm-eval's table code. Prints a summary
(JSON on the last line) and exits 1 on any difference.
"""
import argparse
import glob
import json
import math
import os
import sys


def load_samples(folder):
    out = {}
    for path in glob.glob(os.path.join(folder, "samples_*.jsonl")):
        task = os.path.basename(path)[len("samples_"):-len(".jsonl")]
        with open(path, encoding="utf-8") as f:
            out[task] = {row["doc_id"]: row for row in map(json.loads, f)}
    return out


def argmax(xs):
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("leo")
    p.add_argument("ref")
    p.add_argument("--tolerance", type=float, default=1e-6)
    p.add_argument("--ll-tolerance", type=float, default=1e-6)
    a = p.parse_args()
    ours, ref = load_samples(a.leo), load_samples(a.ref)
    problems = []
    if set(ours) != set(ref):
        problems.append(f"tasks differ: only leo {sorted(set(ours) - set(ref))}, only lm-eval {sorted(set(ref) - set(ours))}")
    items = requests = 0
    max_ll = max_metric = 0.0
    for task in sorted(set(ours) & set(ref)):
        o, r = ours[task], ref[task]
        if set(o) != set(r):
            problems.append(f"{task}: documents differ ({len(o)} vs {len(r)})")
        for doc_id in sorted(set(o) & set(r)):
            lo, rr = o[doc_id], r[doc_id]
            items += 1
            where = f"{task} doc {doc_id}"
            if rr["metrics"] and rr["metrics"][0] in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
                requests += 1
                if rr["arguments"] != lo["arguments"]:
                    problems.append(f"{where}: texts differ")
                    continue
                x, y = lo["filtered_resps"][0], rr["filtered_resps"][0]
                max_ll = max(max_ll, abs(x - y))
                if not abs(x - y) <= a.ll_tolerance * max(1.0, abs(y)):
                    problems.append(f"{where}: log-likelihood {x} vs {y}")
                for m in rr["metrics"]:
                    if lo.get(m, [None, None])[1] != rr[m][1]:
                        problems.append(f"{where}: {m} weight {lo.get(m)} vs {rr[m]}")
                continue
            if "arguments" in rr:
                ra = [tuple(x) for x in rr["arguments"]]
                oa = [tuple(x) for x in lo["arguments"]]
                if ra != oa:
                    problems.append(f"{where}: prompts differ")
                    continue
                requests += len(ra)
                rl = [x[0] for x in rr["filtered_resps"]]
                ol = [x[0] for x in lo["filtered_resps"]]
                for x, y in zip(ol, rl):
                    max_ll = max(max_ll, abs(x - y))
                    if not abs(x - y) <= a.ll_tolerance * max(1.0, abs(y)):
                        problems.append(f"{where}: log-likelihood {x} vs {y}")
                        break
                # The argmax over all choices is a prediction only for acc-type tasks:
                # TruthfulQA's list is mc1's and mc2's choices one after the other, where the
                # same text twice ties in leo and differs by float noise in lm-eval's batches;
                # its mc1/mc2 are compared below.
                if "acc" in rr["metrics"] and argmax(ol) != argmax(rl):
                    problems.append(f"{where}: prediction {argmax(ol)} vs {argmax(rl)}")
                rg = [bool(x[1]) for x in rr["filtered_resps"]]
                og = [bool(x[1]) for x in lo["filtered_resps"]]
                if rg != og:
                    problems.append(f"{where}: is_greedy {og} vs {rg}")
            for m in rr["metrics"]:
                x, y = lo.get(m), rr.get(m)
                if x is None or not abs(x - y) <= a.tolerance:
                    problems.append(f"{where}: {m} {x} vs {y}")
                else:
                    max_metric = max(max_metric, abs(x - y))
    with open(os.path.join(a.leo, "results.json")) as f:
        ores = json.load(f)
    with open(os.path.join(a.ref, "results.json")) as f:
        rres = json.load(f)
    for task, entry in rres["results"].items():
        mine = ores["results"].get(task)
        if mine is None:
            problems.append(f"results: no {task}")
            continue
        for k, v in entry.items():
            if k in ("alias", "name"):
                continue
            w = mine.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                # Relative above 1: a random model's word perplexity is ~1e12.
                if not isinstance(w, (int, float)) or not (abs(w - v) <= a.tolerance * max(1.0, abs(v)) or (math.isnan(v) and math.isnan(w))):
                    problems.append(f"results[{task}][{k}]: {w} vs {v}")
            elif v != w:
                problems.append(f"results[{task}][{k}]: {w!r} vs {v!r}")
    for key in rres:
        if key not in ores and key not in ("samples",):
            # leo need not report lm-eval's environment facts
            if key not in ("pretty_env_info", "transformers_version", "lm_eval_version", "upper_git_hash",
                           "tokenizer_pad_token", "tokenizer_eos_token", "tokenizer_bos_token", "eot_token_id"):
                problems.append(f"results.json: no key {key}")
    try:
        from lm_eval.utils import make_table
        make_table(ores)
        if ores.get("groups"):
            make_table(ores, "groups")
    except Exception as e:  # noqa: BLE001
        problems.append(f"lm-eval's make_table cannot read leo's results: {e!r}")
    for line in problems[:40]:
        print(line)
    print(json.dumps({"items": items, "requests": requests, "problems": len(problems),
                      "max_loglikelihood_difference": max_ll, "max_metric_difference": max_metric}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
