"""`just bench train-step`: one training step of a small Llama on the CPU, leo vs transformers.

Both run the same model (built here by transformers, seed 0, saved as an HF checkpoint that leo
loads) on the same batch, with the same number of threads: forward, next-token loss (f32),
backward, AdamW step (the Trainer's default, torch.optim.AdamW(fused=True); decay on matrices
only), gradients reset to None. Transformers runs eager PyTorch with its default attention
(sdpa). Prints the median step time of each, the ratio, and checks the first losses agree.

Usage: train_step.py --leo TARGET/release/examples/train_step [--layers 6 --hidden 512 ...]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--leo", required=True, help="leo's train_step example binary")
ap.add_argument("--layers", type=int, default=6)
ap.add_argument("--hidden", type=int, default=512)
ap.add_argument("--intermediate", type=int, default=1408)
ap.add_argument("--heads", type=int, default=8)
ap.add_argument("--kv-heads", type=int, default=8)
ap.add_argument("--vocab", type=int, default=32000)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--attn", default="sdpa", help="transformers' attn_implementation")
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
    num_hidden_layers=args.layers, num_attention_heads=args.heads,
    num_key_value_heads=args.kv_heads, max_position_embeddings=max(2048, args.seq),
    rms_norm_eps=1e-5, tie_word_embeddings=False,
)
cfg._attn_implementation = args.attn
model = LlamaForCausalLM(cfg)
n_params = sum(p.numel() for p in model.parameters())
ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))

with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(f"{tmp}/model")
    with open(f"{tmp}/batch.json", "w") as f:
        json.dump(ids.tolist(), f)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    model.train()
    hf_seconds, hf_phases, hf_losses = [], [], []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = model(ids, labels=ids).loss
        forward = time.perf_counter() - start
        loss.backward()
        backward = time.perf_counter() - start
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = time.perf_counter() - start
        hf_losses.append(loss.item())
        hf_seconds.append(total)
        hf_phases.append([forward, backward - forward, total - backward])
    hf_peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del model, opt

    run = subprocess.run(
        [args.leo, f"{tmp}/model", f"{tmp}/batch.json", str(args.steps), str(args.warmup),
         str(args.threads)],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        sys.exit(f"leo's train_step failed:\n{run.stderr}")
    leo = json.loads(run.stdout)
    leo_peak_gb = leo["peak_rss_kb"] / 2**20

hf = statistics.median(hf_seconds[args.warmup:])
ours = statistics.median(leo["step_seconds"][args.warmup:])


def phases(rows):
    cols = list(zip(*rows[args.warmup:]))
    return "forward+loss {:.3f}, backward {:.3f}, AdamW {:.3f}".format(
        *(statistics.median(c) for c in cols))

tokens = args.batch * args.seq
print(f"model: {args.layers} layers, hidden {args.hidden}, {n_params / 1e6:.1f}M parameters; "
      f"batch {args.batch} x {args.seq} tokens, f32, {args.threads} threads, "
      f"{args.steps} timed steps after {args.warmup} warmup")
print(f"transformers ({args.attn}), fused AdamW: {hf:.3f} s/step  ({tokens / hf:,.0f} tokens/s; "
      f"{phases(hf_phases)})")
print(f"leo, fused AdamW:                   {ours:.3f} s/step  ({tokens / ours:,.0f} tokens/s; "
      f"{phases(leo['phases'])})")
print(f"ratio (transformers / leo): {hf / ours:.2f}x")
print(f"peak resident memory: transformers process {hf_peak_gb:.2f} GB, leo process {leo_peak_gb:.2f} GB")
worst = max(abs(a - b) for a, b in zip(hf_losses, leo["losses"]))
print(f"losses agree step by step: max |Δloss| = {worst:.2e} over {len(hf_losses)} steps")
if worst > 1e-3:
    sys.exit("the two sides trained differently: the comparison is void")
