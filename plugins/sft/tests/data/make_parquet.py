"""Writes sharegpt.parquet, the Parquet fixture of src/formats.rs's tests: ShareGPT rows as HF
datasets store them (`conversations: list<struct<from, value>>`). Run with any Python that has
pyarrow (e.g. the venv of tools/datatrove-env.sh): python make_parquet.py sharegpt.parquet"""
import sys

import pyarrow as pa
import pyarrow.parquet as pq

turn = pa.struct([("from", pa.string()), ("value", pa.string())])
rows = {
    "id": ["pq-1", "pq-2", None],
    "conversations": [
        [
            {"from": "human", "value": "Was ist größer, ein Elefant oder eine Maus?"},
            {"from": "gpt", "value": "Ein Elefant."},
            {"from": "human", "value": "Und schwerer?"},
            {"from": "gpt", "value": "Auch der Elefant."},
        ],
        # Malformed: two user turns in a row.
        [{"from": "human", "value": "Hallo"}, {"from": "human", "value": "Hallo?"}],
        [{"from": "system", "value": "Antworte kurz."}, {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}],
    ],
}
table = pa.table(rows, schema=pa.schema([("id", pa.string()), ("conversations", pa.list_(turn))]))
pq.write_table(table, sys.argv[1])
