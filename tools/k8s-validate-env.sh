#!/usr/bin/env bash
# Creates (once) the Python venv with kubernetes-validate, which checks the manifests
# `leo export k8s` writes against the Kubernetes API's JSON schemas (bundled with the package:
# no cluster, no network once installed), then prints an `export` line:
#   eval "$(tools/k8s-validate-env.sh)"
# The venv lives outside the clone ($HOME/.cache/leo/k8s-validate-venv, or $LEO_K8S_VALIDATE_VENV).
set -euo pipefail
venv="${LEO_K8S_VALIDATE_VENV:-$HOME/.cache/leo/k8s-validate-venv}"
version="1.37.0"

ready() {
    [ -x "$venv/bin/kubernetes-validate" ] && "$venv/bin/python" - <<PY 2>/dev/null
from importlib.metadata import version
assert version("kubernetes-validate") == "${version}", version("kubernetes-validate")
PY
}

if ! ready; then
    echo "k8s-validate-env: installing kubernetes-validate==${version} into $venv (one time, under a minute)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==${version}" >&2
    ready || { echo "k8s-validate-env: the venv at $venv is unusable after installing" >&2; exit 1; }
fi

echo "export LEO_K8S_VALIDATE='$venv/bin/kubernetes-validate'"
