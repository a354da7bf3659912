"""`just bench train` on one CUDA GPU: tokens/s and MFU of a 1B Llama in bf16, leo vs PyTorch.

Prepared for a CUDA machine (not part of `just bench train`'s CPU run); run it there as
  eval "$(tools/torch-env.sh)"            # a venv whose torch has CUDA
  cargo build --release --locked -p leo-plugin-pretrain --example train_bench
  "$LEO_TORCH_PYTHON" bench/train_gpu.py --leo target/release/examples/train_bench

The same comparison as bench/train.py (same data, packing, order, optimizer, schedule and
clipping; see its doc), with GPU defaults: a new 1.2B-parameter Llama (22 layers, hidden 2048,
intermediate 5504, 16 heads, vocabulary 32,000; TinyLlama's shape without GQA), rows of 2048
tokens, micro-batch 4 × 2 accumulation = 16,384 tokens per update, f32 master weights and
optimizer state with bf16 autocast on both sides (leo: `--device cuda --precision bf16`;
PyTorch: `torch.autocast("cuda", torch.bfloat16)`, transformers' sdpa attention), fused AdamW.

MFU = tokens/s × FLOPs per token / peak dense bf16 FLOP/s of the card. FLOPs per token as leo's
trainer and PaLM (appendix B) count them: 6 × the weights outside the input embedding +
12 × layers × hidden × sequence. Peak: 989.4 TFLOP/s for H100 SXM and H200, 756 for H100 PCIe,
312 for A100 (`--peak-tflops` for others). Aim: leo ≥ 40% MFU.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here] + [_here]

import tempfile  # noqa: E402

import torch  # noqa: E402

import train  # noqa: E402  (bench/train.py)

PEAKS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
         ("A100", 312.0)]


def main():
    ap = train.arguments(dict(
        hidden=2048, intermediate=5504, layers=22, heads=16, seq=2048, micro_batch=4,
        accumulation=2, steps=10, warmup_steps=3, lr=3e-4, min_lr=3e-5, lr_warmup=2,
        threads=None,
    ))
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak dense bf16 TFLOP/s of the card (default: known NVIDIA cards)")
    ap.add_argument("--recompute", action="store_true",
                    help="leo: activation recompute (PyTorch: gradient checkpointing)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: bench/train_gpu.py is for a GPU machine (bench/train.py runs on the CPU)")
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((p for key, p in PEAKS if key in name), None)
    if peak is None:
        sys.exit(f"unknown peak FLOP/s for {name}: pass --peak-tflops")
    if args.threads:
        torch.set_num_threads(args.threads)
    leo_extra = ["--device", "cuda", "--precision", "bf16"]
    if args.recompute:
        leo_extra.append("--recompute")

    with tempfile.TemporaryDirectory() as tmp:
        cfg, config_json, tokens_dir = train.prepare(args, args.keep or tmp)
        bin_path = os.path.join(tokens_dir, "shard-00000.bin")
        leo, hf = [], []
        for r in range(args.runs):
            order = ["leo", "pytorch"] if r % 2 == 0 else ["pytorch", "leo"]
            for side in order:
                if side == "leo":
                    leo.append(train.leo_run(args, config_json, tokens_dir, leo_extra))
                else:
                    hf.append(train.pytorch_run(args, cfg, bin_path, "cuda", "bf16", args.recompute))
                last = (leo if side == "leo" else hf)[-1]
                print(f"run {r + 1} {side}: {last['tokens_per_s']:,.0f} tokens/s, "
                      f"final loss {last['final_loss']:.4f}", flush=True)

    fpt = hf[0]["flops_per_token"]
    per_update = args.micro_batch * args.accumulation * args.seq
    print(f"\ndevice: {name}, peak {peak:g} TFLOP/s (bf16 dense)")
    print(f"model: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, intermediate "
          f"{cfg.intermediate_size}, {cfg.num_attention_heads} heads, vocabulary {cfg.vocab_size} "
          f"({hf[0]['parameters'] / 1e9:.2f}B parameters), bf16 autocast, "
          f"{fpt / 1e9:.2f} GFLOP per token")
    print(f"updates: {args.micro_batch} x {args.seq} tokens x {args.accumulation} micro-batches "
          f"= {per_update:,} tokens; {args.steps} timed after {args.warmup_steps} warmup")
    # The median update is the headline on a GPU: leo's whole-run figure is the difference of
    # two in-process runs, and the first of them also pays CUDA's lazy kernel loading, which
    # can make the difference meaningless (seen on an H200: 728k "tokens/s" for a 38k model).
    for r, (lo, h) in enumerate(zip(leo, hf)):
        ml, mh = train.median_tokens_per_s(args, lo), train.median_tokens_per_s(args, h)
        if not (ml and mh):
            sys.exit("a side reported no per-update times")
        print(f"run {r + 1}, median update: leo {ml:,.0f} tokens/s, MFU {ml * fpt / (peak * 1e12):.1%}; "
              f"PyTorch {mh:,.0f} tokens/s, MFU {mh * fpt / (peak * 1e12):.1%} (peak GPU memory "
              f"{h.get('peak_gpu_gb', 0):.1f} GiB); ratio leo/PyTorch {ml / mh:.2f}x "
              f"(whole runs: leo {lo['tokens_per_s']:,.0f}, PyTorch {h['tokens_per_s']:,.0f} tokens/s)")
    print(f"final loss: leo {leo[0]['final_loss']:.4f}, PyTorch {hf[0]['final_loss']:.4f}")


if __name__ == "__main__":
    main()
