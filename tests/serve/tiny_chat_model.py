"""A tiny random chat model, and transformers' greedy completions from it (tests/serve.rs).

  tiny_chat_model.py make DIR LLAMA2_TOKENIZER_JSON
      A 2-layer Llama saved by transformers (safetensors) with the Llama-2 tokenizer plus
      ChatML's tokens as the sft stage adds them, <|im_end|> as EOS, and LeoLM's chat template
      as the sft stage writes it into tokenizer_config.json.
  tiny_chat_model.py generate DIR REQUEST_JSON
      REQUEST_JSON: [{"messages": [...], "max_new_tokens": N}, ...]. For each, the rendered
      prompt (apply_chat_template with add_generation_prompt=True), its ids (BOS added unless
      the text starts with it, as the sft stage trained), and the greedy completion's text
      (special tokens skipped) and token count, stopping at the EOS ids of the tokenizer
      config, config.json and generation_config.json (and whether it stopped at one)."""
import hashlib
import json
import os
import sys

import torch

# plugins/sft's ChatFormat::default().template(): ChatML with LeoLM's German system prompt.
LEOLM_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n' + 'Dies ist eine Unterhaltung zwischen einem intelligenten, "
    "hilfsbereitem KI-Assistenten und einem Nutzer.\\nDer Assistent gibt ausführliche, hilfreiche "
    "und ehrliche Antworten.' + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def make(out, tokenizer_json):
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    os.makedirs(out, exist_ok=True)
    tok = Tokenizer.from_file(tokenizer_json)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(os.path.join(out, "tokenizer.json"))
    im_end = tok.token_to_id("<|im_end|>")
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=im_end,
        tie_word_embeddings=False,
        # Wider than transformers' 0.02: well-separated logits, so greedy choices never hinge
        # on float summation order.
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "<|im_end|>",
                "unk_token": "<unk>",
                "pad_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "model_max_length": 256,
                "chat_template": LEOLM_TEMPLATE,
            },
            f,
            ensure_ascii=False,
            indent=2,
        )


def generate(folder, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    eos = {tok.convert_tokens_to_ids(tok.eos_token)}
    for ids in (model.config.eos_token_id, GenerationConfig.from_pretrained(folder).eos_token_id):
        eos.update(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    out = []
    for item in json.load(open(request, encoding="utf-8")):
        text = tok.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=not text.startswith(tok.bos_token))["input_ids"]
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=item["max_new_tokens"],
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=tok.pad_token_id,
            )
        new = gen[0][len(ids):].tolist()
        out.append(
            {
                "prompt": text,
                "prompt_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "prompt_tokens": len(ids),
                "stopped": bool(new) and new[-1] in eos,
                "text": tok.decode(new, skip_special_tokens=True),
                "completion_tokens": len(new),
            }
        )
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
