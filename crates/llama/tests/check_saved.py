"""Loads a checkpoint leo wrote with transformers and prints its logits for a prompt (JSON),
after checking the layout transformers expects. Usage: check_saved.py DIR IDS_JSON"""
import json
import struct
import sys

import torch
from transformers import AutoModelForCausalLM

path, ids = sys.argv[1], json.loads(sys.argv[2])
index = json.load(open(f"{path}/model.safetensors.index.json"))
assert set(index) == {"metadata", "weight_map"}, index.keys()
assert index["metadata"]["total_size"] > 0
for shard in sorted(set(index["weight_map"].values())):
    with open(f"{path}/{shard}", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert header["__metadata__"] == {"format": "pt"}, header.get("__metadata__")
model = AutoModelForCausalLM.from_pretrained(path).eval()
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
print(json.dumps({"logits": logits.tolist(), "dtype": str(model.dtype)}))
