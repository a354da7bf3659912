#!/usr/bin/env python3
"""An external leo plugin for tests: counts to `n`, checkpointing every `every` steps.

Protocol (see crates/plugin): `counter.py describe` reads params (JSON) on stdin and prints
{"version", "outputs"}; `counter.py run INVOCATION.json` does the work and prints JSON-line events.

Params: n, every, and for fault tests `stall_at` (before step k, wait for the file
`release` in the params' `dir`) and `crash_at` (SIGKILL itself before step k, first attempt only).
On SIGTERM it checkpoints its last finished step, then exits.
"""
import json
import os
import signal
import sys
import time


def emit(event):
    print(json.dumps(event), flush=True)


def describe():
    params = json.load(sys.stdin)
    for field in ("n", "every"):
        if not isinstance(params.get(field), int) or params[field] <= 0:
            print(json.dumps({"field": field, "message": "must be a positive integer"}))
            sys.exit(1)
    print(json.dumps({"version": "counter-1", "outputs": ["count"]}))


def run(invocation_path):
    with open(invocation_path) as f:
        inv = json.load(f)
    p = inv["params"]
    n, every = p["n"], p["every"]
    start = 0
    if inv["resume_from"]:
        with open(os.path.join(inv["resume_from"]["path"], "state.json")) as f:
            start = json.load(f)["step"]
        print(f"resuming from step {start}", file=sys.stderr, flush=True)
    seen = []
    done = {"step": start, "checkpointed": start}

    def checkpoint(i):
        ckpt = os.path.join(inv["checkpoint_dir"], f"step-{i}")
        os.makedirs(ckpt)
        with open(os.path.join(ckpt, "state.json"), "w") as f:
            json.dump({"step": i}, f)
        emit({"event": "checkpoint", "step": i, "path": ckpt})
        done["checkpointed"] = i

    def on_sigterm(signum, frame):
        # Asked to stop: save where we are, then exit.
        if done["step"] > done["checkpointed"]:
            checkpoint(done["step"])
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    for i in range(start + 1, n + 1):
        if p.get("crash_at") == i and inv["attempt"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if p.get("stall_at") == i:
            release = os.path.join(p["dir"], "release")
            if not os.path.exists(release):
                open(os.path.join(p["dir"], "stalled"), "w").close()
            while not os.path.exists(release):
                time.sleep(0.02)
        seen.append(i)
        done["step"] = i
        emit({"event": "progress", "done": i, "total": n, "unit": "steps"})
        if i % every == 0:
            checkpoint(i)
    out = os.path.join(inv["output_dir"], "count")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"started_from": start, "final": n}, f)
    with open(os.path.join(out, "steps-this-attempt.txt"), "w") as f:
        f.write(" ".join(map(str, seen)))
    emit({"event": "output", "name": "count", "path": out})


if __name__ == "__main__":
    if sys.argv[1:2] == ["describe"]:
        describe()
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2])
    else:
        sys.exit("usage: counter.py describe | run INVOCATION.json")
