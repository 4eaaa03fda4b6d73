#!/usr/bin/env bash
# Put `clawpen` on PATH: a link /usr/local/bin/clawpen -> this checkout's .venv/bin/clawpen.
# Called by quickstart.sh. Leaves alone a clawpen there that is not a link (a pip install of
# its own); says how to reach it when the directory is not writable.
#
#   CLAWPEN_LINK_DIR   where the link goes (default /usr/local/bin)
#   CLAWPEN_VENV       the virtualenv (default .venv of this checkout)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CLAWPEN_VENV:-$ROOT/.venv}/bin/clawpen
dir=${CLAWPEN_LINK_DIR:-/usr/local/bin}
link=$dir/clawpen
if [[ -L $link && $(readlink "$link") == "$target" ]]; then
  exit 0
fi
if [[ -e $link && ! -L $link ]]; then
  echo "quickstart: $link is another clawpen; this one is $target"
elif [[ -w $dir ]]; then
  ln -sfn "$target" "$link"
  echo "quickstart: linked $link -> $target (clawpen is on PATH)"
else
  echo "quickstart: to have clawpen on PATH: sudo ln -s $target $link"
fi
