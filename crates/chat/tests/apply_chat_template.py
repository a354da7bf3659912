"""transformers' apply_chat_template, the peer of leo-chat's rendering (tests/conformance.rs).
Usage: apply_chat_template.py REQUEST_JSON > reference.json

REQUEST_JSON: {"folders": [DIR, ...], "conversations": [[{role, content}, ...], ...]}. Each DIR
holds a tokenizer_config.json (the template under test, its special tokens); this script gives
it a minimal tokenizer.json so that AutoTokenizer loads it. For every folder, conversation and
add_generation_prompt in (False, True) the output holds {"text": ...} or, when the template
refuses the conversation, {"error": ...}."""
import json
import os
import sys

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

req = json.load(open(sys.argv[1], encoding="utf-8"))
out = []
for folder in req["folders"]:
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(folder)
    rendered = []
    for messages in req["conversations"]:
        for add_generation_prompt in (False, True):
            try:
                text = auto.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                rendered.append({"text": text})
            except Exception as e:  # the template's raise_exception
                rendered.append({"error": str(e)})
    out.append(rendered)
json.dump(out, sys.stdout, ensure_ascii=False)
