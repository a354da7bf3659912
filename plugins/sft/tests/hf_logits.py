"""Loads a checkpoint leo wrote with transformers and prints its logits for each prompt (JSON).
Usage: hf_logits.py DIR PROMPTS_JSON (a list of id lists)."""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

path, prompts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
with torch.no_grad():
    out = [model(torch.tensor([p])).logits[0].tolist() for p in prompts]
print(json.dumps({"logits": out, "vocab_size": model.config.vocab_size}))
