"""Reference for leo-train's AdamW: three training steps of a tiny random Llama with
torch.optim.AdamW(fused=True) (the transformers Trainer's default), decay on matrices only,
a different learning rate each step.

Usage: adamw_reference.py OUTDIR — writes OUTDIR/initial (the model before training),
OUTDIR/trained (after) and OUTDIR/reference.json (batches, learning rates, losses).
"""
import json
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)
model = LlamaForCausalLM(cfg)
model.save_pretrained(f"{out}/initial")
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
    lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=True,
)
g = torch.Generator().manual_seed(1)
ref = {"batches": [], "lrs": [3e-3, 2e-3, 1e-3], "losses": []}
model.train()
for lr in ref["lrs"]:
    batch = torch.randint(0, 96, (2, 16), generator=g)
    for group in opt.param_groups:
        group["lr"] = lr
    loss = model(batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    ref["batches"].append(batch.tolist())
    ref["losses"].append(loss.item())
model.save_pretrained(f"{out}/trained")
with open(f"{out}/reference.json", "w") as f:
    json.dump(ref, f)
