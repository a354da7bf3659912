"""`just bench train`: tokens/s of a small Llama's training loop, leo vs a plain PyTorch loop.

Both sides train a new model of the same config on the same data, in the same order, with the
same optimizer, schedule and threads, in one run of this script:

- data: German text (../shared/data/demo/de/elberfelder-1905.txt, one paragraph per line, public
  domain) encoded once with the Llama-2 tokenizer.json by the Python `tokenizers` library, each
  line BOS + ids + EOS, written as one Megatron indexed dataset (`.bin` + `.idx`, uint16, the
  format the tokenize stage writes). Both sides pack the documents back to back into rows of
  seq_len tokens and read rows 0, 1, 2, … in order (leo: `PackedTokens`, no shuffle; PyTorch:
  the `.bin` through a numpy memmap). An update reads micro_batch × accumulation rows.
- leo: plugins/pretrain/examples/train_bench.rs, i.e. `leo_train::train` as the pretrain stage
  runs it (one rank, ZeRO-1 AdamW on PyTorch's fused kernel, the chunked output-layer loss).
- PyTorch: `transformers.LlamaForCausalLM` (its default sdpa attention), f32; per micro-batch
  `model(input_ids=rows, labels=rows).loss / accumulation` and `backward()`;
  `clip_grad_norm_(1.0)`; `torch.optim.AdamW(fused=True)` with weight decay on matrices only;
  `get_cosine_with_min_lr_schedule_with_warmup`; `zero_grad(set_to_none=True)`.

Each side makes warmup + steps updates; the timed part is the `steps` updates after the warmup
(leo: the difference of two in-process runs, see the example's doc). Runs alternate which side
goes first. Besides tokens/s over the timed updates, the tokens/s of each side's median update
is printed (leo's from the trainer's own per-update `tokens_per_s` metric): on a shared machine
a moment of contention slows a few updates several-fold, and the median ignores them. The two
models start from different random initialisations (same distribution), so their losses are
close but not equal; both are printed.

Usage: train.py --leo TARGET/release/examples/train_bench [--steps 15 --warmup-steps 2
  --threads 2 --hidden 256 --layers 4 --seq 256 --micro-batch 4 --accumulation 2 --runs 2 ...]
"""
import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def arguments(defaults=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--leo", required=True, help="leo's train_bench example binary")
    ap.add_argument("--steps", type=int, default=15, help="timed updates per side")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed updates first")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each side")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--lr-warmup", type=int, default=2, help="learning-rate warmup updates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=2, help="runs per side, alternating which goes first")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="leave glibc's allocator settings for the PyTorch loop as they are "
                         "(leo's training processes keep freed memory in the heap)")
    ap.add_argument("--attn", default="sdpa", help="transformers' attn_implementation")
    ap.add_argument("--text", default=os.path.join(ROOT, "demo", "de", "elberfelder-1905.txt"),
                    help="training text, one document per line")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "llama2-tokenizer", "tokenizer.json"))
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="write the token shard (DIR/tokens) and config (DIR/config) here and keep them")
    if defaults:
        ap.set_defaults(**defaults)
    return ap


def write_tokens(text_path, tokenizer_path, needed, out_dir):
    """Encodes lines of `text_path` (BOS + ids + EOS each) until `needed` tokens, into
    out_dir/shard-00000.{bin,idx} (Megatron MMIDIDX v1, uint16). Returns the token count."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    docs, total = [], 0
    with open(text_path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    for start in range(0, len(lines), 64):
        for enc in tok.encode_batch(lines[start:start + 64], add_special_tokens=False):
            doc = [bos, *enc.ids, eos]
            docs.append(doc)
            total += len(doc)
        if total >= needed:
            break
    if total < needed:
        sys.exit(f"{text_path} holds {total} tokens; the bench needs {needed}")
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, "shard-00000")
    lengths = np.array([len(d) for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1].astype(np.int64) * 2)]).astype(np.int64)
    np.concatenate([np.array(d, dtype=np.uint16) for d in docs]).tofile(prefix + ".bin")
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", 8))  # Megatron's code for uint16
        f.write(struct.pack("<Q", len(docs)))
        f.write(struct.pack("<Q", len(docs) + 1))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(np.arange(len(docs) + 1, dtype=np.int64).tobytes())
    return total


def llama_config(args):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
        max_position_embeddings=max(2048, args.seq), rms_norm_eps=1e-5,
        tie_word_embeddings=False, use_cache=False,
    )
    cfg._attn_implementation = args.attn
    return cfg


def flops_per_token(model, cfg, seq):
    """PaLM's estimate, as leo's trainer computes it: 6 per weight outside the input embedding,
    plus 12 · layers · hidden · sequence."""
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq


def pytorch_run(args, cfg, bin_path, device="cpu", precision="f32", recompute=False):
    """The plain PyTorch loop. Returns a dict like leo's example prints."""
    from transformers import LlamaForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg).to(device)
    if recompute:
        model.gradient_checkpointing_enable()
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    total = args.warmup_steps + args.steps
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt, num_warmup_steps=min(args.lr_warmup, total), num_training_steps=total,
        min_lr=args.min_lr,
    )
    tokens = np.memmap(bin_path, dtype=np.uint16, mode="r")
    mb, acc, seq = args.micro_batch, args.accumulation, args.seq
    cuda = device != "cpu"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device.split(":")[0], enabled=False))
    losses, step_seconds = [], []
    start = None
    for step in range(total):
        if step == args.warmup_steps:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        t0 = time.perf_counter()
        loss_sum = 0.0
        for a in range(acc):
            row = (step * acc + a) * mb
            ids = torch.from_numpy(tokens[row * seq:(row + mb) * seq].astype(np.int64)).view(mb, seq)
            ids = ids.to(device, non_blocking=True)
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss / acc
            loss.backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss_sum)
        if cuda:
            torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    n_tokens = args.steps * mb * acc * seq
    out = {
        "tokens_per_s": n_tokens / seconds, "seconds": seconds, "tokens": n_tokens,
        "final_loss": losses[-1], "losses": losses, "step_seconds": step_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token(model, cfg, seq),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    if cuda:
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return out


def leo_run(args, config_json, tokens_dir, extra=()):
    """leo's example; returns its result line plus the per-update tokens/s it emitted."""
    env = dict(os.environ)
    # Where libtorch lives, in case the example's rpath does not say.
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    env["LD_LIBRARY_PATH"] = torch_lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    cmd = [args.leo, "--tokens", tokens_dir, "--config", config_json,
           "--seq-len", str(args.seq), "--micro-batch", str(args.micro_batch),
           "--accumulation", str(args.accumulation), "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--seed", str(args.seed),
           "--lr", str(args.lr), "--min-lr", str(args.min_lr), "--lr-warmup", str(args.lr_warmup),
           *extra]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"leo's train_bench failed:\n{run.stderr[-4000:]}")
    result, per_update = None, []
    for line in run.stdout.splitlines():
        obj = json.loads(line)
        if obj.get("bench") == "leo":
            result = obj
        elif obj.get("event") == "metric" and obj.get("name") == "tokens_per_s":
            per_update.append((obj.get("step"), obj["value"]))
    if result is None:
        sys.exit(f"leo's train_bench printed no result:\n{run.stdout[-2000:]}")
    # The second run's updates after the warmup (the first run emits warmup_steps metrics).
    timed = per_update[2 * args.warmup_steps:]
    if len(timed) == args.steps:
        per_row = args.micro_batch * args.accumulation * args.seq
        result["step_seconds"] = [per_row / v for _, v in timed]
    return result


def median_tokens_per_s(args, result):
    """Tokens/s of the median timed update (robust to a moment of contention on a shared
    machine), or None."""
    steps = result.get("step_seconds")
    if not steps:
        return None
    return args.micro_batch * args.accumulation * args.seq / statistics.median(steps[-args.steps:])


def prepare(args, tmp):
    """Writes the token shard and the config.json both sides use; returns their paths."""
    cfg = llama_config(args)
    needed = (args.warmup_steps + args.steps) * args.micro_batch * args.accumulation * args.seq + 1
    tokens_dir = os.path.join(tmp, "tokens")
    t = time.perf_counter()
    n = write_tokens(args.text, args.tokenizer, needed, tokens_dir)
    print(f"data: {n:,} tokens from {os.path.basename(args.text)} in {time.perf_counter() - t:.1f} s "
          f"({needed:,} needed)", flush=True)
    cfg.save_pretrained(os.path.join(tmp, "config"))
    return cfg, os.path.join(tmp, "config", "config.json"), tokens_dir


def keep_freed_memory():
    """What leo's training processes do first (`leo_train::keep_freed_memory`): glibc keeps freed
    blocks in the heap instead of unmapping those over 32 MiB, so steps stop paying for fresh
    pages. Applied to this process too, so that both loops run on the same allocator settings."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, -1)


def main():
    args = arguments().parse_args()
    if not args.glibc_defaults:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, config_json, tokens_dir = prepare(args, args.keep or tmp)
        bin_path = os.path.join(tokens_dir, "shard-00000.bin")
        leo, hf = [], []
        for r in range(args.runs):
            # Alternate which side goes first.
            order = ["leo", "pytorch"] if r % 2 == 0 else ["pytorch", "leo"]
            for side in order:
                if side == "leo":
                    leo.append(leo_run(args, config_json, tokens_dir))
                else:
                    hf.append(pytorch_run(args, cfg, bin_path))
                last = (leo if side == "leo" else hf)[-1]
                print(f"run {r + 1} {side}: {last['tokens_per_s']:,.0f} tokens/s "
                      f"({last['seconds']:.2f} s for {last['tokens']:,} tokens), "
                      f"final loss {last['final_loss']:.4f}", flush=True)

    per_update = args.micro_batch * args.accumulation * args.seq
    print(f"\nmodel: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, intermediate "
          f"{cfg.intermediate_size}, {cfg.num_attention_heads} heads, vocabulary {cfg.vocab_size} "
          f"({hf[0]['parameters'] / 1e6:.1f}M parameters), f32, {args.threads} threads")
    print(f"updates: {args.micro_batch} x {args.seq} tokens x {args.accumulation} micro-batches "
          f"= {per_update:,} tokens; {args.steps} timed after {args.warmup_steps} warmup; "
          f"lr {args.lr:g} -> {args.min_lr:g} cosine after {args.lr_warmup} warmup")
    for r, (l, h) in enumerate(zip(leo, hf)):
        ml, mh = median_tokens_per_s(args, l), median_tokens_per_s(args, h)
        median = (f"; median update: leo {ml:,.0f}, PyTorch {mh:,.0f} tokens/s, {ml / mh:.2f}x"
                  if ml and mh else "")
        print(f"run {r + 1}: leo {l['tokens_per_s']:,.0f} tokens/s, PyTorch "
              f"{h['tokens_per_s']:,.0f} tokens/s, ratio leo/PyTorch "
              f"{l['tokens_per_s'] / h['tokens_per_s']:.2f}x{median}")
    best_l = max(x["tokens_per_s"] for x in leo)
    best_h = max(x["tokens_per_s"] for x in hf)
    print(f"best run of each: leo {best_l:,.0f} tokens/s, PyTorch {best_h:,.0f} tokens/s, "
          f"ratio leo/PyTorch {best_l / best_h:.2f}x")

    def show(xs):
        return " ".join(f"{x:.3f}" for x in xs)

    print(f"losses (run 1), first 3 / last 3 updates: leo {show(leo[0]['losses'][:3])} / "
          f"{show(leo[0]['losses'][-3:])}; PyTorch {show(hf[0]['losses'][:3])} / "
          f"{show(hf[0]['losses'][-3:])}")
    print(f"final loss: leo {leo[0]['final_loss']:.4f}, PyTorch {hf[0]['final_loss']:.4f} "
          f"(different random initialisations; ln(vocab) = {math.log(cfg.vocab_size):.2f})")
    print(f"peak resident memory: leo process {leo[0]['peak_rss_kb'] / 2**20:.2f} GB, "
          f"Python process {hf[-1]['peak_rss_kb'] / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
