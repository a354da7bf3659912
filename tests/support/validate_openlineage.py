"""Validates OpenLineage RunEvents (one JSON object per line on stdin) against the published
OpenLineage JSON schema (argv[1]), formats included (uuid, date-time, uri). Prints one line per
problem and exits 1 if there is any."""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
validator_cls = jsonschema.validators.validator_for(schema)
validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
problems = 0
events = 0
for n, line in enumerate(sys.stdin, 1):
    if not line.strip():
        continue
    events += 1
    for error in validator.iter_errors(json.loads(line)):
        problems += 1
        print(f"event {n}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
print(f"{events} events, {problems} problems")
sys.exit(1 if problems or not events else 0)
