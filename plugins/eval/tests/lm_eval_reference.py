"""The peer side of leo's eval conformance test and `just bench eval`.

    python lm_eval_reference.py make-model OUT_DIR [--seed N]
    python lm_eval_reference.py run --model DIR --tasks-dir DIR --data NAME=PATH ... \
        --tasks arc_challenge_de,mmlu_de --out DIR [--limit N] [--dtype float64] [--batch-size 8]

`make-model` saves a tiny random Llama with the Llama-2 tokenizer in HF layout. `run` turns
leo's task definitions (TOML, lm-eval's field names) into lm-eval 0.4 task YAMLs over the local
files, runs lm-eval's HF backend (`add_bos_token=False`, as LeoLM's fork), and writes
`results.json` (lm-eval's dict, without samples), `samples_TASK.jsonl` per (sub)task and
`timing.json` (seconds and request counts).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_model(out, seed, tokenizer_json):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        # Wider than Llama's 0.02, so a random model's choices differ clearly in likelihood.
        initializer_range=0.3,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.save_pretrained(out)


def yaml_str(s):
    return json.dumps(s, ensure_ascii=False)  # JSON strings are valid YAML scalars


def write_yaml(path, fields):
    with open(path, "w", encoding="utf-8") as f:
        for k, v in fields.items():
            if isinstance(v, str) and v.startswith("!function "):
                f.write(f"{k}: {v}\n")
            else:
                f.write(f"{k}: {json.dumps(v, ensure_ascii=False)}\n")


UTILS = '''
import numpy as np

def tqa_mc1_mc2(doc, results, mc1_field, mc2_field):
    lls = [r[0] for r in results]
    n1 = len(doc[mc1_field]["choices"])
    mc1 = 1.0 if int(np.argmax(lls[:n1])) == 0 else 0.0
    labels = list(doc[mc2_field]["labels"])
    split = labels.index(0)
    l2 = lls[n1:]
    p_true, p_false = np.exp(np.array(l2[:split])), np.exp(np.array(l2[split:]))
    p_true = p_true / (sum(p_true) + sum(p_false))
    return {"mc1": mc1, "mc2": float(sum(p_true))}
'''


def to_jsonl(path, tmp):
    """Text files become {"text": line} records, as leo reads them."""
    if not path.endswith(".txt"):
        return path
    out = os.path.join(tmp, os.path.basename(path) + ".jsonl")
    with open(path, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                g.write(json.dumps({"text": line}, ensure_ascii=False) + "\n")
    return out


def split_file(data, split, single_file):
    if os.path.isfile(data):
        return data
    for name in sorted(os.listdir(data)):
        if name.split(".")[0] == split:
            return os.path.join(data, name)
    raise SystemExit(f"{data}: no {split} file")


def task_yamls(spec, name, data, tmp, utils):
    """lm-eval YAMLs for one leo task; returns the task (or group) names to run."""
    single = os.path.isfile(data)
    files = {spec["test_split"]: to_jsonl(split_file(data, spec["test_split"], single), tmp)}
    if spec.get("fewshot_split"):
        files[spec["fewshot_split"]] = split_file(data, spec["fewshot_split"], single)
    base = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": files},
        "test_split": spec["test_split"],
        "num_fewshot": spec.get("num_fewshot", 0),
        "target_delimiter": spec.get("target_delimiter", " "),
        "fewshot_delimiter": spec.get("fewshot_delimiter", "\n\n"),
    }
    if spec.get("fewshot_split"):
        base["fewshot_split"] = spec["fewshot_split"]
    if spec.get("fewshot_sampler") == "first_n":
        base["fewshot_config"] = {"sampler": "first_n"}
    if spec.get("description"):
        base["description"] = spec["description"]
    kind = spec["output_type"]
    if kind == "multiple_choice":
        base.update(output_type="multiple_choice", doc_to_text=spec["doc_to_text"],
                    doc_to_choice=spec["doc_to_choice"], doc_to_target=spec["doc_to_target"])
        base["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                               for m in spec["metrics"]]
    elif kind == "truthfulqa_mc":
        mc1 = spec["mc1_choices"].strip("{} ").split(".")[0]
        mc2 = spec["mc2_choices"].strip("{} ").split(".")[0]
        fn = f"tqa_{name}"
        utils.append(f"def {fn}(doc, results):\n    return tqa_mc1_mc2(doc, results, {mc1!r}, {mc2!r})\n")
        base.update(output_type="multiple_choice", doc_to_text=spec["doc_to_text"],
                    doc_to_choice="{{" + f"{mc1}.choices + {mc2}.choices" + "}}",
                    doc_to_target=0, process_results=f"!function utils.{fn}")
        base["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                               for m in spec["metrics"]]
    elif kind == "loglikelihood_rolling":
        base.update(output_type="loglikelihood_rolling", doc_to_text="",
                    doc_to_target=spec["doc_to_target"])
        agg = {"word_perplexity": "weighted_perplexity", "byte_perplexity": "weighted_perplexity",
               "bits_per_byte": "bits_per_byte"}
        base["metric_list"] = [{"metric": m, "aggregation": agg[m], "higher_is_better": False}
                               for m in spec["metrics"]]
    field = spec.get("subtask_field")
    if not field:
        write_yaml(os.path.join(tmp, f"{name}.yaml"), {"task": name, **base})
        return [name]
    # One task per subject, each with its own few-shot pool; the group's score is the
    # unweighted mean over subjects.
    subjects = {}
    with open(files[spec["test_split"]], encoding="utf-8") as f:
        for line in f:
            subjects.setdefault(json.loads(line)[field], 0)
    fewshot_count = {}
    if spec.get("fewshot_split"):
        with open(files[spec["fewshot_split"]], encoding="utf-8") as f:
            for line in f:
                s = json.loads(line)[field]
                fewshot_count[s] = fewshot_count.get(s, 0) + 1
    subtasks = []
    for s in sorted(subjects):
        fn = f"only_{name}_{s}"
        utils.append(f"def {fn}(dataset):\n    return dataset.filter(lambda d: d[{field!r}] == {s!r})\n")
        sub = dict(base, task=f"{name}_{s}", process_docs=f"!function utils.{fn}")
        # LeoLM's fork takes what the dev split has; lm-eval's first_n sampler would assert.
        sub["num_fewshot"] = min(base["num_fewshot"], fewshot_count.get(s, 0))
        write_yaml(os.path.join(tmp, f"{name}_{s}.yaml"), sub)
        subtasks.append(f"{name}_{s}")
    write_yaml(os.path.join(tmp, f"{name}_group.yaml"), {
        "group": name, "task": subtasks,
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": False}
                                  for m in spec["metrics"]],
    })
    return [name]


def run(args):
    import lm_eval
    from lm_eval.tasks import TaskManager

    data = dict(d.split("=", 1) for d in args.data)
    tmp = tempfile.mkdtemp(prefix="lm-eval-tasks-")
    utils = [UTILS]
    names = []
    for spec_name in args.tasks.split(","):
        path = os.path.join(args.tasks_dir, f"{spec_name}.toml")
        with open(path, "rb") as f:
            spec = tomllib.load(f)
        names += task_yamls(spec, spec["task"], data[spec["task"]], tmp, utils)
    with open(os.path.join(tmp, "utils.py"), "w") as f:
        f.write("\n".join(utils))
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={args.model},dtype={args.dtype},add_bos_token=False",
        tasks=names,
        task_manager=TaskManager(include_path=tmp),
        limit=args.limit,
        log_samples=True,
        batch_size=args.batch_size,
        device="cpu",
        fewshot_random_seed=1234,
    )
    seconds = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    samples = out.pop("samples")
    requests = 0
    for task, rows in samples.items():
        with open(os.path.join(args.out, f"samples_{task}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                requests += len(row["arguments"])
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=2, default=str)
    items = sum(len(rows) for rows in samples.values())
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump({"seconds": seconds, "items": items, "requests": requests}, f)
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("out")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tokenizer", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--tasks-dir", required=True)
    r.add_argument("--data", action="append", default=[])
    r.add_argument("--tasks", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--limit", type=int)
    r.add_argument("--dtype", default="float64")
    r.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    if a.cmd == "make-model":
        make_model(a.out, a.seed, a.tokenizer)
    else:
        run(a)


if __name__ == "__main__":
    sys.exit(main())
