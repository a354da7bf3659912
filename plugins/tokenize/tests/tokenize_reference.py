"""Encodes documents with the Python `tokenizers` library, as the tokenize plugin must:
BOS, the text's ids without special tokens, EOS.
Usage: tokenize_reference.py TOKENIZER_JSON DOCS_JSONL > ids.json"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
docs = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
encs = tok.encode_batch(docs, add_special_tokens=False)
# The tokenizer's own post-processor puts BOS first too (Llama-2's TemplateProcessing).
assert all(e.ids[:1] == [bos] for e in tok.encode_batch(docs[:10]))
print(json.dumps({"bos": bos, "eos": eos, "ids": [[bos] + e.ids + [eos] for e in encs]}))
