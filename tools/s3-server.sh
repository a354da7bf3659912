#!/usr/bin/env bash
# Installs (once) the S3-compatible server the tests run on loopback, s3s-fs 0.14.1 (newer
# versions need a newer rustc), under $HOME/.cache/leo/tools (or $LEO_TOOLS), and prints
#   export LEO_S3S_FS=<path of the binary>
# for `eval "$(tools/s3-server.sh)"`.
set -euo pipefail
root="${LEO_TOOLS:-$HOME/.cache/leo/tools}"
bin="$root/bin/s3s-fs"
if ! [ -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "0.14.1"; then
    echo "s3-server: building s3s-fs 0.14.1 into $root (one time, a few minutes)" >&2
    cargo install s3s-fs --version 0.14.1 --locked --features binary --root "$root" --quiet >&2
fi
echo "export LEO_S3S_FS='$bin'"
