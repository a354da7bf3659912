#!/usr/bin/env python3
"""`just chaos`: SIGKILL the demo at five moments, resume each time, and check that the final
eval numbers equal an uninterrupted run's.

One uninterrupted run of the workflow, then five trials. Each trial starts the same workflow on
fresh state and store (nothing cached), waits for its moment in the engine's progress lines
(event-driven: a stage started, or a checkpoint of a training stage stored), SIGKILLs the
engine (its workers die with it), runs `leo resume RUN` to completion and compares every eval
metric (`TASK/METRIC` of every eval stage) with the uninterrupted run's: they must be equal to
the last bit, since every stage is deterministic and a killed training stage continues from its
last checkpoint. It also checks that a killed training stage did resume from a checkpoint.

Usage: tools/chaos.py --leo target/debug/leo [--workflow workflows/leolm-tiny.toml] [--keep DIR]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

# (name, progress line that marks the moment, stage that must log a resume or None)
MOMENTS = [
    ("corpus prep: tokenizer training just started", "started   tokenizer", None),
    ("base pretraining: after its checkpoint at step 100", "checkpoint base step 100", "base"),
    ("stage 2: after its checkpoint at step 50", "checkpoint stage2 step 50", "stage2"),
    ("SFT: after its checkpoint at step 40", "checkpoint sft step 40", "sft"),
    ("evaluation: eval of the chat model just started", "started   eval_chat", None),
]


def leo(args, root, check=True, capture=True):
    cmd = [ARGS.leo, "--state", os.path.join(root, "state.db")] + args
    p = subprocess.run(cmd, cwd=root, text=True, capture_output=capture)
    if check and p.returncode != 0:
        sys.exit(f"chaos: `{' '.join(cmd)}` failed ({p.returncode}):\n{p.stderr}")
    return p


def run_args(root):
    return ["run", os.path.abspath(ARGS.workflow), "--store", os.path.join(root, "store")]


def eval_metrics(root, run):
    status = json.loads(leo(["status", run, "--json"], root).stdout)
    if status["run"]["status"] != "succeeded":
        sys.exit(f"chaos: run {run} is {status['run']['status']}")
    out = {}
    for stage in status["stages"]:
        for name, value in (stage.get("metrics") or {}).items():
            if "/" in name:
                out[f"{stage['name']}:{name}"] = value
    if not out:
        sys.exit(f"chaos: run {run} has no eval metrics")
    return out


def latest_run(root):
    runs = json.loads(leo(["list", "--json"], root).stdout)
    return runs[0]["id"]


def trial(moment, marker, resumed_stage, root):
    env = dict(os.environ, LEO_LEASE_TTL="2")
    cmd = [ARGS.leo, "--state", os.path.join(root, "state.db")] + run_args(root)
    engine = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    seen = False
    for line in engine.stderr:
        if marker in line:
            seen = True
            break
    if not seen:
        engine.wait()
        sys.exit(f"chaos: the run ended before `{marker}` ({moment})")
    engine.send_signal(signal.SIGKILL)
    engine.wait()
    engine.stderr.close()
    run = latest_run(root)
    status = json.loads(leo(["status", run, "--json"], root).stdout)["run"]["status"]
    if status == "succeeded":
        sys.exit(f"chaos: run {run} finished before the kill ({moment})")
    started = time.time()
    leo(["resume", run], root)
    if resumed_stage:
        log = leo(["logs", run, resumed_stage], root).stdout
        if "resuming from" not in log:
            sys.exit(f"chaos: {resumed_stage} did not resume from a checkpoint ({moment})")
    return run, time.time() - started


def main():
    keep = ARGS.keep or tempfile.mkdtemp(prefix="leo-chaos-")
    os.makedirs(keep, exist_ok=True)
    print(f"chaos: workflow {ARGS.workflow}; runs under {keep}", flush=True)
    base_root = os.path.join(keep, "uninterrupted")
    os.makedirs(base_root, exist_ok=True)
    started = time.time()
    leo(run_args(base_root), base_root, capture=False)
    expected = eval_metrics(base_root, latest_run(base_root))
    print(f"chaos: uninterrupted run: {len(expected)} eval numbers in {time.time() - started:.0f} s",
          flush=True)
    failures = 0
    for i, (moment, marker, resumed_stage) in enumerate(MOMENTS, 1):
        root = os.path.join(keep, f"kill-{i}")
        os.makedirs(root, exist_ok=True)
        run, seconds = trial(moment, marker, resumed_stage, root)
        got = eval_metrics(root, run)
        diff = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        verdict = "equal" if not diff else f"DIFFERENT in {len(diff)}: " + ", ".join(
            f"{k} {expected.get(k)} vs {got.get(k)}" for k in diff[:5])
        failures += bool(diff)
        print(f"chaos: {i}. SIGKILL at {moment}; `leo resume {run}` completed in {seconds:.0f} s; "
              f"{len(got)} eval numbers {verdict}", flush=True)
    if failures:
        sys.exit(f"chaos: {failures} of {len(MOMENTS)} resumed runs differ from the uninterrupted run")
    print(f"chaos: all {len(MOMENTS)} killed and resumed runs match the uninterrupted run "
          f"({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leo", required=True)
    parser.add_argument("--workflow", default="workflows/leolm-tiny.toml")
    parser.add_argument("--keep", help="folder for the runs (default: a new temporary folder)")
    ARGS = parser.parse_args()
    main()
