"""Encodes documents with the Python `tokenizers` library (the reference for leo's tokenizer).
Usage: tokenize_reference.py TOKENIZER_JSON DOCS_JSONL > ids.json"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
docs = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
print(json.dumps([e.ids for e in tok.encode_batch(docs)]))
