"""Reference outputs from Hugging Face transformers for leo-llama's conformance tests.

Usage: reference.py OUTDIR — writes OUTDIR/model (one safetensors file), OUTDIR/model-sharded
(several shards + index) and OUTDIR/reference.json (logits, greedy generation, log-likelihoods, a training loss) and OUTDIR/grads.safetensors
(its gradients).
The model is a tiny random Llama with grouped-query attention and linear RoPE scaling x2, like
LeoLM's, and a context of 64 positions (32 before scaling) so prompts reach beyond it.
"""
import copy
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rope_scaling={"rope_type": "linear", "factor": 2.0}, rms_norm_eps=1e-6,
    bos_token_id=1, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False,
)
model = LlamaForCausalLM(cfg).eval()
model.save_pretrained(f"{out}/model")
model.save_pretrained(f"{out}/model-sharded", max_shard_size="40KB")

g = torch.Generator().manual_seed(1)
prompts = [torch.randint(0, 128, (n,), generator=g).tolist() for n in (5, 17, 48, 64)]
ref = {"prompts": prompts, "logits": []}
with torch.no_grad():
    for p in prompts:
        ref["logits"].append(model(torch.tensor([p])).logits[0].tolist())

    prompt = torch.randint(0, 128, (8,), generator=g).tolist()
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, attention_mask=torch.ones(1, 8, dtype=torch.long))
    ref["generate"] = {"prompt": prompt, "output": generated[0, len(prompt):].tolist()}

    pairs = []
    for _ in range(50):
        n_ctx = int(torch.randint(1, 21, (1,), generator=g))
        n_cont = int(torch.randint(1, 9, (1,), generator=g))
        ctx = torch.randint(0, 128, (n_ctx,), generator=g).tolist()
        cont = torch.randint(0, 128, (n_cont,), generator=g).tolist()
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
        scored = logp[n_ctx - 1 : n_ctx - 1 + n_cont]
        target = torch.tensor(cont)
        total = scored.gather(1, target.unsqueeze(1)).sum().item()
        greedy = bool((scored.argmax(-1) == target).all())
        pairs.append({"context": ctx, "continuation": cont, "logprob": total, "greedy": greedy})
    ref["loglikelihood"] = pairs

# bf16: the same weights rounded to bfloat16, computed in bfloat16 (as on a GPU, here on the CPU).
with torch.no_grad():
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ref["bf16_logits"] = bf16(torch.tensor([prompts[2]])).logits[0].float().tolist()
    del bf16

# Training: the loss of LlamaForCausalLM given labels, and every parameter's gradient.
batch = torch.randint(0, 128, (2, 24), generator=g)
model.train()
loss = model(batch, labels=batch).loss
loss.backward()
ref["train"] = {"batch": batch.tolist(), "loss": loss.item()}
save_file({n: p.grad.contiguous() for n, p in model.named_parameters()}, f"{out}/grads.safetensors")

with open(f"{out}/reference.json", "w") as f:
    json.dump(ref, f)
