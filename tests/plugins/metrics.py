#!/usr/bin/env python3
"""An external leo plugin for tests of metrics: reports training-like metrics for `steps` steps
(step 10, 20, …), then writes output `out`. With `fail_first`, attempt 1 reports its first two
steps and fails, so a retry reports them again.
"""
import json
import os
import sys

LOSS = [2.9, 2.6, 2.45, 2.314, 2.2, 2.1]


def emit(event):
    print(json.dumps(event), flush=True)


def describe():
    params = json.load(sys.stdin)
    steps = params.get("steps")
    if not isinstance(steps, int) or not 1 <= steps <= len(LOSS):
        print(json.dumps({"field": "steps", "message": f"must be an integer from 1 to {len(LOSS)}"}))
        sys.exit(1)
    print(json.dumps({"version": "metrics-1", "outputs": ["out"]}))


def run(invocation_path):
    with open(invocation_path) as f:
        inv = json.load(f)
    params = inv["params"]
    failing = params.get("fail_first", False) and inv["attempt"] == 1
    steps = 2 if failing else params["steps"]
    for i in range(steps):
        step = (i + 1) * 10
        emit({"event": "metric", "step": step, "name": "loss", "value": LOSS[i]})
        emit({"event": "metric", "step": step, "name": "lr", "value": 2.0e-5})
        emit({"event": "metric", "step": step, "name": "grad_norm", "value": 0.83})
        emit({"event": "metric", "step": step, "name": "tokens_per_s", "value": 1520 + i})
    if failing:
        sys.exit("attempt 1 fails on purpose")
    emit({"event": "metric", "name": "samples", "value": 64})
    out = os.path.join(inv["output_dir"], "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "done.txt"), "w") as f:
        f.write("done")


if __name__ == "__main__":
    if sys.argv[1:2] == ["describe"]:
        describe()
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2])
    else:
        sys.exit("usage: metrics.py describe | run INVOCATION.json")
