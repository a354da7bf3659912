#!/usr/bin/env bash
# Creates (once) the Python venv that provides libtorch for `tch` and the conformance peers
# (transformers, safetensors, tokenizers; jsonschema for the OpenLineage check; megatron-core
# for reading token shards with Megatron's own reader; tensorboard for reading the event files
# `leo metrics` writes; lm-eval with accelerate, the peer of the eval stage), then prints
# `export` lines for the build:
#   eval "$(tools/torch-env.sh)"
# The venv lives outside the clone (default $HOME/.cache/leo/torch-venv, or $LEO_TORCH_VENV) so
# CI and later checkouts reuse it; the binaries find libtorch through an rpath (crates/llama/build.rs).
set -euo pipefail
venv="${LEO_TORCH_VENV:-$HOME/.cache/leo/torch-venv}"
torch_version="2.11.0"
packages=("torch==${torch_version}" "transformers==5.24.0" "safetensors==0.8.0" "tokenizers==0.23.3"
          "jsonschema[format-nongpl]==4.25.1" "megatron-core==0.16.1" "tensorboard==2.21.0"
          "lm-eval==0.4.13" "accelerate==1.15.0")

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<PY 2>/dev/null
import torch, transformers, safetensors, tokenizers, jsonschema, rfc3339_validator
assert torch.__version__.split("+")[0] == "${torch_version}", torch.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__
# megatron-core by its metadata: importing it (torch, apex probes) would add seconds to every eval.
import importlib.metadata
assert importlib.metadata.version("megatron-core") == "0.16.1"
assert importlib.metadata.version("tensorboard") == "2.21.0"
assert importlib.metadata.version("lm-eval") == "0.4.13"
assert importlib.metadata.version("accelerate") == "1.15.0"
PY
}

if ! ready; then
    echo "torch-env: installing ${packages[*]} into $venv (one time, about 3 minutes and 5 GB)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
    ready || { echo "torch-env: the venv at $venv is unusable after installing" >&2; exit 1; }
fi

echo "export VIRTUAL_ENV='$venv'"
echo "export PATH='$venv/bin':\"\$PATH\""
echo "export LIBTORCH_USE_PYTORCH=1"
echo "export LEO_TORCH_PYTHON='$venv/bin/python'"
