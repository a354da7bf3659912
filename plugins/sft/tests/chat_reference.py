"""The peers of leo's ChatML rendering and tokenization (tests/conformance.rs).
Usage: chat_reference.py TOKENIZER_DIR REQUEST_JSON > reference.json

TOKENIZER_DIR holds leo's tokenizer.json (ChatML tokens added) and tokenizer_config.json with
leo's chat template. REQUEST_JSON: {"conversations": [[{role, content}, ...], ...],
"templates": [jinja, ...]}. For each template and conversation the reference holds
transformers' `apply_chat_template` text (whole conversation, and all but the last message
with `add_generation_prompt`), and the ids of that text from AutoTokenizer and from the
`tokenizers` library's `Tokenizer.from_file` (both with special tokens, i.e. BOS first)."""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

folder, request = sys.argv[1], sys.argv[2]
req = json.load(open(request, encoding="utf-8"))
auto = AutoTokenizer.from_pretrained(folder)
raw = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
out = {"auto_class": type(auto).__name__, "templates": []}
for i, template in enumerate(req["templates"]):
    # The first template is the folder's own (tokenizer_config.json); the others are passed in.
    kw = {} if i == 0 else {"chat_template": template}
    rendered, prompts, ids_auto, ids_raw = [], [], [], []
    for messages in req["conversations"]:
        text = auto.apply_chat_template(messages, tokenize=False, **kw)
        rendered.append(text)
        prompts.append(
            auto.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True, **kw)
        )
        ids_auto.append(auto(text)["input_ids"])
        ids_raw.append(raw.encode(text).ids)
    out["templates"].append(
        {"rendered": rendered, "prompts": prompts, "ids_auto": ids_auto, "ids_tokenizers": ids_raw}
    )
json.dump(out, sys.stdout, ensure_ascii=False)
