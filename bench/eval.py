"""`just bench eval`: the eval stage's scoring vs lm-evaluation-harness's HF backend.

Both score the same GermanBench documents (../shared/data/germanbench-sample) with the same
model: a 2-layer, hidden-128 Llama with the Llama-2 tokenizer (random weights, made by
transformers; the size PEERS.md quotes lm-eval's speed for), f32, on the CPU with the same
threads. leo: plugins/eval/examples/eval_run.rs (the stage's code without the engine). lm-eval:
0.4.13, `--model hf`, batch size 8, `add_bos_token=False`, tasks generated from leo's task
definitions (plugins/eval/tests/lm_eval_reference.py). Items/s for both, their ratio, and the
item-by-item comparison (prompts, predictions; f32, so log-likelihoods to 1e-4).

Usage: eval.py --leo TARGET/release/examples/eval_run [--arc 100] [--truthfulqa 100]
               [--mmlu-per-subject 2] [--threads N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--leo", required=True, help="the eval_run example binary")
ap.add_argument("--arc", type=int, default=100, help="ARC-DE test questions (of 300)")
ap.add_argument("--truthfulqa", type=int, default=100, help="TruthfulQA-DE questions (of 300)")
ap.add_argument("--mmlu-per-subject", type=int, default=2, help="MMLU-DE questions per subject")
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared", "data")
gb = os.path.join(shared, "germanbench-sample")
tests = os.path.join(here, "..", "plugins", "eval", "tests")
tasks_dir = os.path.join(here, "..", "plugins", "eval", "tasks")
py = sys.executable
env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))


def read(path):
    with open(path, encoding="utf-8") as f:
        return [l for l in f if l.strip()]


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(rows)


with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
    data = {}
    d = os.path.join(tmp, "arc_challenge_de")
    write(os.path.join(d, "test.jsonl"), read(os.path.join(gb, "arc_challenge_de/test.jsonl"))[: args.arc])
    write(os.path.join(d, "validation.jsonl"), read(os.path.join(gb, "arc_challenge_de/validation.jsonl")))
    data["arc_challenge_de"] = d
    d = os.path.join(tmp, "truthfulqa_de")
    write(os.path.join(d, "validation.jsonl"), read(os.path.join(gb, "truthfulqa_de/validation.jsonl"))[: args.truthfulqa])
    data["truthfulqa_de"] = d
    d = os.path.join(tmp, "mmlu_de")
    count, rows = {}, []
    for line in read(os.path.join(gb, "mmlu_de/test.jsonl")):
        s = json.loads(line)["subject"]
        if count.get(s, 0) < args.mmlu_per_subject:
            count[s] = count.get(s, 0) + 1
            rows.append(line)
    write(os.path.join(d, "test.jsonl"), rows)
    write(os.path.join(d, "dev.jsonl"), read(os.path.join(gb, "mmlu_de/dev.jsonl")))
    data["mmlu_de"] = d

    model = os.path.join(tmp, "model")
    subprocess.run([py, "-c", f"""
import sys; sys.path.insert(0, {tests!r})
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
torch.manual_seed(0)
c = LlamaConfig(vocab_size=32000, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                bos_token_id=1, eos_token_id=2, initializer_range=0.1)
LlamaForCausalLM(c).save_pretrained({model!r})
PreTrainedTokenizerFast(tokenizer_file={os.path.join(shared, 'llama2-tokenizer', 'tokenizer.json')!r},
    bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained({model!r})
"""], check=True, env=env, capture_output=True)

    names = ",".join(data)
    leo_out, ref_out = os.path.join(tmp, "leo"), os.path.join(tmp, "lm-eval")
    cmd = [args.leo, "--model", model, "--tasks", names, "--out", leo_out, "--dtype", "f32",
           "--threads", str(args.threads)]
    for k, v in data.items():
        cmd += ["--data", f"{k}={v}"]
    subprocess.run(cmd, check=True, env=env)
    cmd = [py, os.path.join(tests, "lm_eval_reference.py"), "run", "--model", model, "--tasks-dir",
           tasks_dir, "--tasks", names, "--out", ref_out, "--dtype", "float32", "--batch-size", "8"]
    for k, v in data.items():
        cmd += ["--data", f"{k}={v}"]
    subprocess.run(cmd, check=True, env=env, stderr=subprocess.DEVNULL)

    t_leo = json.load(open(os.path.join(leo_out, "timing.json")))
    t_ref = json.load(open(os.path.join(ref_out, "timing.json")))
    cmp = subprocess.run([py, os.path.join(tests, "compare_results.py"), leo_out, ref_out,
                          "--tolerance", "1e-4", "--ll-tolerance", "1e-4"],
                         capture_output=True, text=True, env=env)
    summary = json.loads(cmp.stdout.strip().splitlines()[-1])
    print(f"documents: {t_leo['items']} (ARC-DE {args.arc}, TruthfulQA-DE {args.truthfulqa}, "
          f"MMLU-DE {args.mmlu_per_subject}/subject), requests: {t_leo['requests']}; {args.threads} threads")
    print(f"{'':10}{'seconds':>10}{'items/s':>10}{'requests/s':>12}")
    for name, t in (("leo", t_leo), ("lm-eval", t_ref)):
        print(f"{name:10}{t['seconds']:10.1f}{t['items'] / t['seconds']:10.2f}{t['requests'] / t['seconds']:12.1f}")
    print(f"ratio leo / lm-eval (items/s): {t_ref['seconds'] / t_leo['seconds']:.1f}x")
    print(f"comparison: {summary['items']} items, {summary['problems']} differences "
          f"(max |log-likelihood difference| {summary['max_loglikelihood_difference']:.2e})")
    if summary["problems"]:
        print(cmp.stdout)
        sys.exit(1)
