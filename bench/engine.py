#!/usr/bin/env python3
"""Engine benchmark: a generated no-op DAG run through leo and through Snakemake.

The shape (default 20 layers x 50 stages = 1,000 stages): stage (i, j) for layer
i in 0..layers and j in 0..width; for i > 0 it depends on (i-1, j) and
(i-1, (j+1) % width). Every stage is a no-op that creates one empty output file.

Both tools run the same shape, each in its own fresh temp dir, with the same
number of cores: first a full run (every stage executes), then a rerun with
nothing to do (leo: every stage a cache hit; Snakemake: "Nothing to be done").
Prints stages/s for both, the ratio leo/snakemake and the cached-rerun times.

Usage:
    python3 bench/engine.py --leo target/release/leo [--layers 20] [--width 50]
        [--snakemake PATH] [--cores 2] [--tmp DIR] [--keep DIR]

Without --snakemake, Snakemake (bench/requirements-engine.txt) is installed into
bench/.venv, created if missing; the install is skipped when it is already there.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".venv"
REQUIREMENTS = BENCH_DIR / "requirements-engine.txt"
CACHED_RERUN_TARGET_S = 2.0


def die(msg: str) -> None:
    print(f"engine bench: {msg}", file=sys.stderr)
    sys.exit(1)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_checked(what: str, cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run cmd in cwd with output captured; return (seconds, result). Exit 1 on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"engine bench: {what} failed (exit {proc.returncode}): {' '.join(cmd)}", file=sys.stderr)
        if proc.stdout.strip():
            print("--- stdout (tail) ---", file=sys.stderr)
            print(tail(proc.stdout), file=sys.stderr)
        print("--- stderr (tail) ---", file=sys.stderr)
        print(tail(proc.stderr), file=sys.stderr)
        sys.exit(1)
    return elapsed, proc


# --------------------------------------------------------------------------- shape


def stage_name(i: int, j: int) -> str:
    return f"s_{i}_{j}"


def upstream(i: int, j: int, width: int) -> list[tuple[int, int]]:
    if i == 0:
        return []
    return [(i - 1, j), (i - 1, (j + 1) % width)]


# --------------------------------------------------------------------------- machine


def machine_info() -> str:
    nproc = os.cpu_count()
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except (OSError, ValueError, IndexError):
        pass
    return f"machine: nproc {nproc}, {model}{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


# --------------------------------------------------------------------------- leo


def leo_toml(layers: int, width: int) -> str:
    # Each stage's command carries its own name as a shell comment, so that no two
    # stages share a fingerprint: the full run must execute every stage rather than
    # serving a stage from the cache entry of an identical sibling (all stages of a
    # layer would otherwise be identical, having identical empty inputs).
    out = ['[workflow]', 'name = "bench-engine"', '']
    for i in range(layers):
        for j in range(width):
            name = stage_name(i, j)
            out.append(f"[stages.{name}]")
            out.append('plugin = "shell"')
            ups = upstream(i, j, width)
            if ups:
                (ai, aj), (bi, bj) = ups
                out.append(f'inputs = {{ a = "{stage_name(ai, aj)}.out", b = "{stage_name(bi, bj)}.out" }}')
            out.append(f'params = {{ run = ": > $LEO_OUTPUT_OUT/done  # {name}", outputs = ["out"] }}')
            out.append("")
    return "\n".join(out)


def leo_status(leo: str, state: Path, cwd: Path, run_id: str | None = None) -> dict:
    cmd = [leo, "--state", str(state), "status", "--json"]
    if run_id:
        cmd.append(run_id)
    _, proc = run_checked("leo status", cmd, cwd)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        die(f"leo status --json printed no valid JSON ({e}): {tail(proc.stdout, 5)}")
        raise  # unreachable


def check_leo_statuses(what: str, status: dict, n: int, want: str) -> None:
    stages = status.get("stages", [])
    run = status.get("run", {})
    if run.get("status") != "succeeded":
        die(f"leo {what}: run {run.get('id')} has status {run.get('status')!r}, expected 'succeeded'")
    if len(stages) != n:
        die(f"leo {what}: status lists {len(stages)} stages, expected {n}")
    bad = [(s.get("name"), s.get("status")) for s in stages if s.get("status") != want]
    if bad:
        shown = ", ".join(f"{name}={st}" for name, st in bad[:10])
        die(f"leo {what}: {len(bad)} of {n} stages are not {want!r}: {shown}{' ...' if len(bad) > 10 else ''}")


def bench_leo(leo: str, layers: int, width: int, cores: int, workdir: Path) -> tuple[float, float]:
    n = layers * width
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "bench.toml").write_text(leo_toml(layers, width))
    state = workdir / ".leo" / "state.db"
    store = workdir / ".leo" / "store"
    cmd = [leo, "--state", str(state), "run", "bench.toml", "--store", str(store), "--cpus", str(cores)]

    full_s, _ = run_checked("leo run", cmd, workdir)
    check_leo_statuses("full run", leo_status(leo, state, workdir), n, "succeeded")

    cached_s, _ = run_checked("leo cached rerun", cmd, workdir)
    check_leo_statuses("cached rerun", leo_status(leo, state, workdir), n, "cached")
    return full_s, cached_s


def leo_version(leo: str) -> str:
    _, proc = run_checked("leo --version", [leo, "--version"], Path.cwd())
    words = proc.stdout.split()
    return words[-1] if words else "?"


# --------------------------------------------------------------------------- snakemake


def snakefile(layers: int, width: int) -> str:
    # One target rule and one wildcard rule whose input function gives the same two
    # upstream edges as the leo workflow; every job is a shell no-op (touch).
    return f'''\
LAYERS = {layers}
WIDTH = {width}

wildcard_constraints:
    i = r"\\d+",
    j = r"\\d+",


def upstream(wc):
    i, j = int(wc.i), int(wc.j)
    if i == 0:
        return []
    return [f"out/s_{{i - 1}}_{{j}}", f"out/s_{{i - 1}}_{{(j + 1) % WIDTH}}"]


rule all:
    input:
        [f"out/s_{{LAYERS - 1}}_{{j}}" for j in range(WIDTH)],


rule s:
    input:
        upstream,
    output:
        "out/s_{{i}}_{{j}}",
    shell:
        "touch {{output}}"
'''


def ensure_snakemake() -> str:
    """Return the path of a snakemake executable in bench/.venv, installing it if needed."""
    py = VENV_DIR / "bin" / "python"
    exe = VENV_DIR / "bin" / "snakemake"
    if not py.exists():
        print(f"engine bench: creating {VENV_DIR}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    have = subprocess.run([str(py), "-c", "import snakemake"], capture_output=True).returncode == 0
    if not have or not exe.exists():
        print(f"engine bench: installing {REQUIREMENTS.name} into {VENV_DIR}", file=sys.stderr)
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(REQUIREMENTS)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if proc.returncode != 0 or not exe.exists():
            die(f"pip install of {REQUIREMENTS} failed:\n{tail(proc.stdout)}")
    return str(exe)


def snakemake_version(exe: str) -> str:
    _, proc = run_checked("snakemake --version", [exe, "--version"], Path.cwd())
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"


def bench_snakemake(exe: str, layers: int, width: int, cores: int, workdir: Path) -> tuple[float, float]:
    n = layers * width
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(snakefile(layers, width))
    # --quiet without values: no progress or rule information (output is captured
    # anyway; errors still reach stderr).
    cmd = [exe, "--cores", str(cores), "--snakefile", "Snakefile", "--quiet"]

    full_s, _ = run_checked("snakemake run", cmd, workdir)
    made = sorted(p.name for p in (workdir / "out").iterdir()) if (workdir / "out").is_dir() else []
    if len(made) != n:
        die(f"snakemake full run made {len(made)} outputs, expected {n}")

    mtimes = {p: p.stat().st_mtime_ns for p in (workdir / "out").iterdir()}
    cached_s, _ = run_checked("snakemake rerun", cmd, workdir)
    touched = [p.name for p, m in mtimes.items() if p.stat().st_mtime_ns != m]
    if touched:
        die(f"snakemake rerun re-ran {len(touched)} jobs (e.g. {touched[0]}), expected nothing to do")
    return full_s, cached_s


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leo", required=True, help="path to the leo binary")
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--width", type=int, default=50)
    ap.add_argument("--snakemake", help="snakemake executable (default: install into bench/.venv)")
    ap.add_argument("--cores", type=int, default=2, help="cores for both tools (leo --cpus, snakemake --cores)")
    ap.add_argument("--tmp", metavar="DIR", help="create the run folders under DIR (e.g. /dev/shm to leave the disk out)")
    ap.add_argument("--keep", metavar="DIR", help="run in DIR/leo and DIR/snakemake and keep them (DIR must not hold them yet)")
    args = ap.parse_args()
    if args.layers < 1 or args.width < 1 or args.cores < 1:
        die("--layers, --width and --cores must be >= 1")
    if args.width < 2 and args.layers > 1:
        die("--width must be >= 2 (each stage has two distinct upstream stages)")

    leo = shutil.which(args.leo) or args.leo
    leo = str(Path(leo).resolve())
    if not os.access(leo, os.X_OK):
        die(f"leo binary not found or not executable: {args.leo}")
    if args.snakemake:
        smk = shutil.which(args.snakemake) or args.snakemake
        smk = str(Path(smk).resolve()) if os.sep in smk else smk
    else:
        smk = ensure_snakemake()

    n = args.layers * args.width
    lv, sv = leo_version(leo), snakemake_version(smk)
    print(f"engine bench: {n} stages ({args.layers} layers x {args.width}), --cores {args.cores}, leo {lv}, snakemake {sv}")
    print(machine_info(), flush=True)
    fs_dir = args.tmp or tempfile.gettempdir()
    fs = subprocess.run(["stat", "-f", "-c", "%T", fs_dir], capture_output=True, text=True).stdout.strip()
    print(f"run folders under {fs_dir} ({fs or 'unknown file system'})", flush=True)

    if args.keep:
        root = Path(args.keep).resolve()
        for sub in ("leo", "snakemake"):
            if (root / sub).exists():
                die(f"--keep: {root / sub} already exists")
        root.mkdir(parents=True, exist_ok=True)
        leo_dir, smk_dir = root / "leo", root / "snakemake"
        cleanup = []
    else:
        leo_dir = Path(tempfile.mkdtemp(prefix="leo-bench-engine-leo-", dir=args.tmp))
        smk_dir = Path(tempfile.mkdtemp(prefix="leo-bench-engine-snakemake-", dir=args.tmp))
        cleanup = [leo_dir, smk_dir]

    try:
        leo_full, leo_cached = bench_leo(leo, args.layers, args.width, args.cores, leo_dir)
        smk_full, smk_cached = bench_snakemake(smk, args.layers, args.width, args.cores, smk_dir)
    finally:
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)

    leo_rate, smk_rate = n / leo_full, n / smk_full
    print(f"{'':10}{'full run':>10}{'stages/s':>12}{'cached rerun':>15}")
    print(f"{'leo':10}{leo_full:>8.2f} s{leo_rate:>12.1f}{leo_cached:>13.2f} s")
    print(f"{'snakemake':10}{smk_full:>8.2f} s{smk_rate:>12.1f}{smk_cached:>13.2f} s")
    verdict = "ok" if leo_cached <= CACHED_RERUN_TARGET_S else "MISSED"
    print(
        f"ratio (leo/snakemake stages/s): {leo_rate / smk_rate:.1f}x; "
        f"cached rerun: leo {leo_cached:.2f} s (target <= {CACHED_RERUN_TARGET_S:g} s, {verdict})"
    )
    if args.keep:
        print(f"kept: {leo_dir}  {smk_dir}")


if __name__ == "__main__":
    main()
