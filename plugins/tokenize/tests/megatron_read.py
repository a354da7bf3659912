"""Reads token shards with Megatron-LM's own reader (megatron-core's IndexedDataset) and prints
every shard's dtype, document indices and sequences as JSON.
Usage: megatron_read.py TOKENS_DIR > shards.json"""
import json
import pathlib
import sys

from megatron.core.datasets.indexed_dataset import IndexedDataset

root = pathlib.Path(sys.argv[1])
out = {}
for split in ("train", "validation"):
    shards = []
    for idx in sorted((root / split).glob("shard-*.idx")):
        ds = IndexedDataset(str(idx.with_suffix("")))
        shards.append({
            "name": idx.stem,
            "dtype": ds.index.dtype.__name__,
            "document_indices": [int(d) for d in ds.document_indices],
            "sequences": [ds[i].tolist() for i in range(len(ds))],
        })
    out[split] = shards
print(json.dumps(out))
