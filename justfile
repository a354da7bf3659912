# leo's tasks. `just demo` and `just test` are all a new machine needs (after `cargo install just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
leo := target_dir / "debug" / "leo"

# List the recipes
default:
    @just --list

# Build the `leo` binary (debug)
build:
    cargo build --locked -p leo-cli

# Corpus prep, a BPE, an English base model, German stage 2 with RoPE x2, German SFT,
# evaluation and the report. Installs libtorch (a Python venv) when missing; run it again and
# everything is cached.
# Run LeoLM in miniature (workflows/leolm-tiny.toml) on this machine's CPU, ~5 min
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(tools/torch-env.sh)"
    cargo build --locked -p leo-cli -p leo-torch
    {{leo}} run workflows/leolm-tiny.toml
    {{leo}} status
    echo "the report: $({{leo}} report latest)"

# Six demo runs on fresh state, about 6x the demo's time (tools/chaos.py).
# SIGKILL the demo at 5 moments, resume each, compare eval numbers with an uninterrupted run
chaos *args:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(tools/torch-env.sh)"
    cargo build --locked -p leo-cli -p leo-torch
    python3 tools/chaos.py --leo "{{leo}}" {{args}}

# Set up libtorch (a Python venv with torch 2.11.0 and the conformance peers); idempotent
torch:
    tools/torch-env.sh > /dev/null

# Unit tests, end-to-end tests of the binary on local and on team storage, conformance against
# transformers, lm-eval, datatrove, Python tokenizers and megatron-core.
# Run every test
test:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(tools/torch-env.sh)"
    eval "$(tools/datatrove-env.sh)"
    eval "$(tools/k8s-validate-env.sh)"
    eval "$(tools/s3-server.sh)"
    cargo build --locked --workspace --all-targets
    cargo test --locked --workspace
    # The end-to-end suite again on team storage: state on PostgreSQL, artifacts on an S3 server
    # (throwaway servers the tests start on loopback).
    LEO_TEST_STORAGE=team cargo test --locked -p leo-e2e

# Benchmarks, each printing ours vs the peer and the ratio: `just bench engine` (leo vs Snakemake
# on a 1,000-stage DAG), `just bench train-step` (a training step of a 6-layer Llama vs transformers),
# `just bench train` (tokens/s of the pretrain stage's training loop vs a plain PyTorch loop over
# transformers' Llama, same data and threads; bench/train_gpu.py is its prepared 1B bf16 GPU run),
# `just bench store` (a 2 GB file up to and down from a local S3 server vs rclone),
# `just bench tokenize` (a German corpus through the tokenize plugin vs Python `tokenizers`),
# `just bench eval` (GermanBench documents scored by the eval stage vs lm-eval's HF backend),
# `just bench corpus` (filters + MinHash on the German corpus and a 300 MB replica vs datatrove;
# `--skip-large` for the small input only).
# Run a benchmark: ours and the peer on the same input, and the ratio (NAME: see above)
bench name *args:
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{name}}" in
      engine)
        cargo build --release --locked -p leo-cli
        python3 bench/engine.py --leo "{{target_dir}}/release/leo" {{args}}
        ;;
      train-step)
        eval "$(tools/torch-env.sh)"
        cargo build --release --locked -p leo-train --example train_step
        "$LEO_TORCH_PYTHON" bench/train_step.py --leo "{{target_dir}}/release/examples/train_step" {{args}}
        ;;
      train)
        eval "$(tools/torch-env.sh)"
        cargo build --release --locked -p leo-plugin-pretrain --example train_bench
        "$LEO_TORCH_PYTHON" bench/train.py --leo "{{target_dir}}/release/examples/train_bench" {{args}}
        ;;
      store)
        eval "$(tools/s3-server.sh)"
        command -v rclone >/dev/null || { echo "bench store needs rclone (Debian: apt-get install rclone)" >&2; exit 2; }
        cargo build --release --locked -p leo-store --example store_bench
        python3 bench/store.py --leo "{{target_dir}}/release/examples/store_bench" --s3s-fs "$LEO_S3S_FS" {{args}}
        ;;
      tokenize)
        eval "$(tools/torch-env.sh)"
        cargo build --release --locked -p leo-plugin-tokenize --example tokenize_bench
        "$LEO_TORCH_PYTHON" bench/tokenize_bench.py --leo "{{target_dir}}/release/examples/tokenize_bench" {{args}}
        ;;
      eval)
        eval "$(tools/torch-env.sh)"
        cargo build --release --locked -p leo-plugin-eval --example eval_run
        "$LEO_TORCH_PYTHON" bench/eval.py --leo "{{target_dir}}/release/examples/eval_run" {{args}}
        ;;
      corpus)
        eval "$(tools/datatrove-env.sh)"
        cargo build --release --locked -p leo-plugin-corpus --example corpus_run
        "$LEO_DATATROVE_PYTHON" bench/corpus.py --leo "{{target_dir}}/release/examples/corpus_run" \
          --python "$LEO_DATATROVE_PYTHON" --model "$LEO_LID176_MODEL" {{args}}
        ;;
      *)
        echo "unknown benchmark '{{name}}'; available: engine, train-step, train, store, tokenize, eval, corpus" >&2
        exit 2
        ;;
    esac

# Formatting and clippy, warnings as errors
lint:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(tools/torch-env.sh)"
    cargo fmt --all -- --check
    cargo clippy --locked --workspace --all-targets -- -D warnings

# Remove the demo's state and artifacts (.leo/)
clean-demo:
    rm -rf .leo
